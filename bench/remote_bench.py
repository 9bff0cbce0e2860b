"""Remote checkpoints and batches, measured side by side in one run.

    python bench/remote_bench.py               # ~1.5 GB checkpoint; about 3 minutes
    python bench/remote_bench.py --mb 300      # a smaller one
    python bench/remote_bench.py --batch-only --tmpfs /dev/shm   # the batch on disk and on tmpfs

1. Remote: a checkpoint of 5 float32 kernels with Adam slots (``--mb`` MB of data in all) is
   put in moto's S3 server (``moto_server``, its own process, on a loopback port). Then, each in
   its own process: ``ckptsurgery inspect s3://...`` (the bytes it transfers counted by a
   loopback TCP proxy in front of the server), ``ckptsurgery strip s3://... --optimizer-slots
   --out s3://...`` (which also reads its output back to verify it), and the baseline: ``s3fs``
   alone downloading the input's files to a local folder and uploading the stripped output's
   files (the same bytes in and out, no verification). Wall time and peak RSS (``os.wait4``).
2. Batch: 4 checkpoints of ``--batch-mb`` MB each on the local disk, ``strip DIR
   --optimizer-slots --out-dir OUT`` with ``--jobs 1`` and with ``--jobs 2``; with ``--tmpfs
   DIR`` again with inputs and outputs on that tmpfs (``/dev/shm``), so that the disk is out of
   the measurement.

Prints a table and the ratios asked for: strip / (download + upload), inspect bytes / total,
``--jobs 2`` / ``--jobs 1`` (on the disk, and on the tmpfs), and the load average before and
after (other processes on the machine change every figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import strip_bench  # noqa: E402
from strip_bench import measure  # noqa: E402

BUCKET = "bench"
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
       "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingProxy:
    """A loopback TCP proxy that counts the bytes the server sends back."""

    def __init__(self, port: int):
        self.port, self.received = port, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src, dst, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self.lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()


def make_checkpoint(prefix: str, mb: int, layers: int = 5) -> None:
    """``layers`` float32 kernels with Adam slots, ``mb`` MB in all."""
    import numpy as np

    from ckptsurgery.formats.writer import BundleFileWriter

    n = int((mb * 2**20 / (3 * layers * 4)) ** 0.5)
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    rng = np.random.default_rng(0)
    with BundleFileWriter(prefix) as w:
        for i in range(layers):
            w.add(f"layer{i}/bias", np.zeros(n, np.float32))
            for slot in ("", "/Adam", "/Adam_1"):
                w.add(f"layer{i}/kernel{slot}", rng.standard_normal((n, n), np.float32))
        w.add("beta1_power", np.float32(0.9))
        w.add("global_step", np.int64(1))


def make_in_child(prefix: str, mb: int) -> None:
    """:func:`make_checkpoint` in a child process: this one stays small, and the children
    measured (forked from it) do not start with its peak RSS as theirs."""
    subprocess.run([sys.executable, __file__, "--make", prefix, str(mb)], check=True)


def digest(f) -> str:
    """SHA-256 of an open file, read a piece at a time (this process stays small: the children
    measured are forked from it)."""
    import hashlib

    h = hashlib.sha256()
    with f:
        while piece := f.read(2**24):
            h.update(piece)
    return h.hexdigest()


def files(prefix: str) -> list[str]:
    folder, base = os.path.dirname(prefix), os.path.basename(prefix)
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.startswith(base + ".")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1500, help="size of the remote checkpoint")
    ap.add_argument("--batch-mb", type=int, default=400, help="size of each batch checkpoint")
    ap.add_argument("--batch-count", type=int, default=4, help="checkpoints in the batch")
    ap.add_argument("--batch-only", action="store_true", help="only the batch part (no S3)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each step; the median")
    ap.add_argument("--tmpfs", metavar="DIR",
                    help="also run the batch with its inputs and outputs in DIR, a tmpfs "
                         "(/dev/shm): the disk out of the measurement")
    opts = ap.parse_args()
    if opts.tmpfs:
        check_tmpfs(opts.tmpfs, opts.batch_count * opts.batch_mb * 2**20 * 3 // 2)
    load = os.getloadavg()
    strip_bench.REPEAT = opts.repeat
    work = tempfile.mkdtemp(prefix="remote-bench-")
    port = free_port()
    env = {**ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    os.environ.update(env)
    server = None if opts.batch_only else subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(0 if opts.batch_only else 100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        rows, notes = ([], []) if opts.batch_only else run(work, opts, port)
        for root, place in [(work, "disk")] + ([(opts.tmpfs, "tmpfs")] if opts.tmpfs else []):
            more = run_batch(root, opts, place)
            rows, notes = rows + more[0], notes + more[1]
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'step':52} {'wall s':>7} {'peak RSS MB':>12}")
    for row in rows:
        print(f"{row['label']:52} {row['wall']:7.2f} {row['rss_mb']:12.0f}")
    for note in notes:
        print(note)
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: "
          "{:.2f} {:.2f} {:.2f}".format(*load, *os.getloadavg()))


def check_tmpfs(folder: str, needed: int) -> None:
    """Exit unless ``folder`` is on a tmpfs with ``needed`` bytes free."""
    real = os.path.realpath(folder)
    with open("/proc/mounts") as f:
        mounts = [line.split()[1:3] for line in f]
    point, kind = max(((m, k) for m, k in mounts
                       if real == m or real.startswith(m.rstrip("/") + "/")),
                      key=lambda mk: len(mk[0]))
    if kind != "tmpfs":
        sys.exit(f"--tmpfs {folder}: on {point}, a {kind} file system, not a tmpfs")
    free = shutil.disk_usage(real).free
    if free < needed:
        sys.exit(f"--tmpfs {folder}: {free / 2**30:.1f} GiB free, the batch needs "
                 f"{needed / 2**30:.1f} GiB; give a smaller --batch-mb or --batch-count")


def run_batch(root: str, opts, place: str) -> tuple[list[dict], list[str]]:
    """``--batch-count`` checkpoints in a new folder under ``root`` (``place``: the disk or a
    tmpfs), stripped with --jobs 1, then 2; the folder removed after."""
    work = tempfile.mkdtemp(prefix="remote-bench-batch-", dir=root)
    try:
        tree = os.path.join(work, "tree")
        for i in range(opts.batch_count):
            make_in_child(os.path.join(tree, f"run{i}", "model.ckpt"), opts.batch_mb)
        outs = os.path.join(work, "outs")
        rows = []
        label = f"strip DIR --out-dir ({opts.batch_count} x {opts.batch_mb} MB, {place})"
        for jobs in (1, 2):
            rows.append(measure(f"{label} --jobs {jobs}", [
                sys.executable, "-m", "ckptsurgery", "strip", tree, "--optimizer-slots",
                "--out-dir", outs, "--jobs", str(jobs), "--quiet"], outputs=(outs,)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, [f"--jobs 2 / --jobs 1 ({place}): {rows[1]['wall'] / rows[0]['wall']:.2f}x"]


def run(work: str, opts, port: int) -> tuple[list[dict], list[str]]:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    src = os.path.join(work, "src", "model.ckpt")
    make_in_child(src, opts.mb)
    subprocess.run([sys.executable, __file__, "--upload", f"{BUCKET}/run", *files(src)],
                   check=True)  # in a child, as above
    total = sum(os.path.getsize(p) for p in files(src))
    local_out = os.path.join(work, "local", "model.ckpt")  # the bytes the baseline uploads
    cli = [sys.executable, "-m", "ckptsurgery"]
    subprocess.run([*cli, "strip", src, "--optimizer-slots", "--out", local_out, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    out_bytes = sum(os.path.getsize(p) for p in files(local_out))
    rows = []
    proxy = CountingProxy(port)
    os.environ["AWS_ENDPOINT_URL"] = proxy.url
    rows.append(measure("ckptsurgery inspect s3://", [*cli, "inspect", f"s3://{BUCKET}/run/model.ckpt"]))
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    inspected = proxy.received
    rows.append(measure("ckptsurgery strip s3:// --out s3://", [
        *cli, "strip", f"s3://{BUCKET}/run/model.ckpt", "--optimizer-slots", "--out",
        f"s3://{BUCKET}/slim/model.ckpt", "--quiet", "--force"]))
    baseline = textwrap.dedent(f"""
        import os, sys, s3fs
        fs = s3fs.S3FileSystem()
        down = sys.argv[1]
        os.makedirs(down, exist_ok=True)
        for key in fs.ls("{BUCKET}/run"):
            fs.get_file(key, os.path.join(down, key.rsplit("/", 1)[1]))
        for path in sys.argv[2:]:
            fs.put_file(path, "{BUCKET}/base/" + os.path.basename(path))
    """)
    down = os.path.join(work, "down")
    rows.append(measure("s3fs download input + upload output", [
        sys.executable, "-c", baseline, down, *files(local_out)], outputs=(down,)))
    identical = all(digest(fs.open(f"{BUCKET}/slim/{os.path.basename(p)}", "rb"))
                    == digest(open(p, "rb")) for p in files(local_out))
    by = {r["label"]: r for r in rows}
    strip, base = by["ckptsurgery strip s3:// --out s3://"], by["s3fs download input + upload output"]
    notes = [
        f"checkpoint {total / 2**20:,.0f} MiB, stripped output {out_bytes / 2**20:,.0f} MiB; "
        f"s3 output bit-identical to the local strip: {identical}",
        f"inspect transferred {inspected:,} bytes = {100 * inspected / total:.4f}% of the "
        "checkpoint",
        f"strip / (s3fs download + upload): {strip['wall'] / base['wall']:.2f}x; strip peak RSS "
        f"{strip['rss_mb']:.0f} MB",
    ]
    return rows, notes


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make"]:
        make_checkpoint(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--upload"]:
        import s3fs

        for path in sys.argv[3:]:
            s3fs.S3FileSystem().put_file(path, f"{sys.argv[2]}/{os.path.basename(path)}")
    else:
        main()
