"""A process that exports checkpoints over and over and has its workers killed on request.

    python tests/export_worker.py SOURCE_PREFIX OUT_PREFIX

Used by test_atomic.py. TensorFlow is imported once here; for each ``kill SECONDS`` line on
stdin, a forked child runs the graft workflow (open, plan, restore, export with ``--force``) in a
loop into OUT_PREFIX, and is SIGKILLed after SECONDS; the line ``killed N`` (N exports the child
completed) answers. The fork happens before any TensorFlow session exists in this process, so each
child starts its own. One TensorFlow import serves every kill, which keeps the test short.
"""

from __future__ import annotations

import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _export_forever(source: str, out: str, progress: int) -> None:
    from ckptsurgery.graft.build import GraftSpec
    from ckptsurgery.graft.job import GraftJob, run_graft
    from ckptsurgery.graph.layers import parse_dense

    spec = GraftSpec("hiddens3", [parse_dense("hidden4:20:relu"), parse_dense("logits:10")])
    while True:
        run_graft(GraftJob(source, spec, out, force=True), log=lambda line: None)
        os.write(progress, b".")


def main(source: str, out: str) -> None:
    import tensorflow  # noqa: F401  (loaded once, before any fork)

    import ckptsurgery.graft.job  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command != "kill":
            break
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                _export_forever(source, out, write_fd)
            finally:
                os._exit(1)
        os.close(write_fd)
        time.sleep(float(arg))
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
        with os.fdopen(read_fd, "rb") as done:
            exports = len(done.read())
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            print(f"killed {exports}", flush=True)
        else:  # the child stopped by itself: an export failed (its traceback is on stderr)
            print(f"died {status}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
