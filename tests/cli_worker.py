"""A long-lived process that runs ``ckptsurgery`` commands in-process, for the fuzz test.

    python tests/cli_worker.py

Reads one JSON request per line on stdin and answers one JSON line:

* ``{"argv": [...]}`` -> ``{"code": int, "out": str, "err": str}``: ``ckptsurgery ARGV`` run by
  ``main(argv)`` in this process (one TensorFlow import for hundreds of runs);
* ``{"digest": PREFIX}`` -> what the checkpoint holds, read through the library (see
  :func:`digest`), or ``{"error": str}``.

A TensorFlow abort kills this process: the test sees its death, counts it as a failure and
starts another worker. Answers go to the original stdout; anything else written to file
descriptor 1 (native code) is sent to stderr so it cannot garble them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def digest(prefix: str) -> dict:
    """``{"digest": {name: sha256 of dtype, shape, bytes}, "info": {name: "dtype shape"},
    "unreadable": [names whose bytes do not read back]}``."""
    from ckptsurgery.errors import CkptSurgeryError
    from ckptsurgery.formats.checkpoint import open_checkpoint

    ckpt = open_checkpoint(prefix)
    out: dict = {"digest": {}, "info": {}, "unreadable": []}
    for name, info in ckpt.variables.items():
        out["info"][name] = f"{info.dtype} {list(info.shape)}"
        try:
            value = ckpt.read(name)
        except CkptSurgeryError:
            out["unreadable"].append(name)
            continue
        h = hashlib.sha256(out["info"][name].encode())
        h.update(value.tobytes())
        out["digest"][name] = h.hexdigest()
    return out


def main() -> None:
    import tensorflow  # noqa: F401
    from safety_helpers import run_main

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    print("ready", file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "argv" in request:
            code, out, err = run_main(*request["argv"])
            answer = {"code": code, "out": out, "err": err}
        else:
            try:
                answer = digest(request["digest"])
            except Exception as e:
                answer = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), file=answers, flush=True)


if __name__ == "__main__":
    main()
