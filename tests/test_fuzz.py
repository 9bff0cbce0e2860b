"""Fuzzing: damaged copies of the fixture checkpoint through inspect, verify, diff, strip and
graft --dry-run (and of the corpus's V1 checkpoint through the first four).

Every run must end with exit 0 and correct output, or a clean error (exit 2, one line on stderr,
no traceback): no death by a signal, no hang (each run is time-boxed), no partial output. The
runs go through ``main(argv)`` inside one long-lived worker process (cli_worker.py), so that a
TensorFlow abort shows as the worker's death, without paying a TensorFlow import per run.

What "correct" means when a command succeeds on a damaged copy:

* verify: the tensors are bit-identical to the original's (a damaged ``.meta`` may still verify:
  the format has no checksum for it, and verify can only check it against the data);
* inspect: every variable of the original is listed;
* diff ORIGINAL DAMAGED: what it reports for each variable (identical, changed, reshaped,
  retyped, added, removed) is what the two hold;
* strip: the output verifies and holds the original's tensors minus the stripped ones;
* graft --dry-run: a plan is printed and nothing is written.

Besides bytes damaged at random, some cases rewrite one bundle entry with odd values (dtype,
shape, shard, offset, size) and valid checksums, as only a deliberate forgery would.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
from collections import Counter

import pytest
from conftest import CORPUS, ROOT
from safety_helpers import copy_checkpoint, craft_index, entry_bytes

from ckptsurgery.formats.bundle import read_table

MUTATIONS = 320
SEED = 5
TIMEOUT = 120  # seconds for one run: a hang, not a slow run
KINDS = ["bitflip", "bitflip", "edges", "truncate", "zeros", "random", "swap", "delete",
         "append", "entry"]
COMMANDS = ("verify", "inspect", "diff", "strip", "graft --dry-run")
V1 = "AloshkaD__traffic-signs__model_v1/model.ckpt"


class Worker:
    """The cli_worker.py process; restarted after a death or a hang (both counted)."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self.proc = None
        self.starts = 0

    def ask(self, request: dict) -> dict | str:
        """The answer, or ``"died: ..."`` / ``"hang"``."""
        if self.proc is None:
            self._start()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        self.proc.kill()
        code = self.proc.wait()
        self.proc = None
        return "hang" if not ready else f"died: exit status {code}"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def _start(self) -> None:
        self.starts += 1
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests",
                                                                       "cli_worker.py")],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True, cwd=ROOT)
        ready, _, _ = select.select([self.proc.stdout], [], [], 300)
        assert ready and self.proc.stdout.readline().strip() == "ready", "worker did not start"


def mutate(prefix: str, rng: random.Random) -> str:
    """Damage one file of the checkpoint copy at ``prefix`` (or its folder's state file);
    returns what was done."""
    from ckptsurgery.formats.checkpoint import locate

    files = list(locate(prefix).paths)
    kind = rng.choice(KINDS)
    if kind == "entry":
        if prefix + ".index" in files:
            return _bad_entry(prefix, rng)
        kind = "bitflip"  # a V1 file has no bundle entries
    # the index and the .meta hold the structure: damage them more often than the data
    path = rng.choice(files + [p for p in files if not p.endswith("-00001")]
                      + [os.path.join(os.path.dirname(prefix), "checkpoint")])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = len(data)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "edges":  # headers and footers, where the structure is
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(n, 64)) if rng.random() < 0.5 else n - 1 - rng.randrange(min(n, 64))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(n):]
    elif kind == "zeros":
        start = rng.randrange(n)
        end = min(n, start + rng.randint(1, 4096))
        data[start:end] = bytes(end - start)
    elif kind == "random":
        data = bytearray(rng.randbytes(rng.randint(0, min(2 * n, 1 << 16))))
    elif kind == "swap":
        with open(rng.choice([p for p in files if p != path] or files), "rb") as f:
            data = bytearray(f.read())
    elif kind == "append":
        data += rng.randbytes(rng.randint(1, 1000))
    if kind == "delete" and os.path.basename(path) == "checkpoint":
        # a folder without a state file is a batch of the checkpoints under it (test_batch.py),
        # not a damaged checkpoint: damage the state file's text instead
        data = bytearray(b"model_checkpoint_path: \"gone\"\n")
        kind = "truncate"
    if kind == "delete":
        os.remove(path)
    else:
        with open(path, "wb") as f:
            f.write(bytes(data))
    return f"{kind} {os.path.basename(path)}"


def _bad_entry(prefix: str, rng: random.Random) -> str:
    """Rewrite one bundle entry with odd values, the index checksums kept valid: what bit flips
    cannot reach, and what makes TensorFlow's reader abort unless checked first."""
    key = rng.choice(sorted(k.decode() for k, _ in read_table(prefix + ".index") if k))
    odd = [0, 1, 3, 7, 20, 21, 64, 101, -1, -5, 1 << 31, 1 << 40, 1 << 62]
    dims = [rng.choice([rng.randint(0, 900)] + odd) for _ in range(rng.randint(0, 3))]
    craft_index(prefix, key, entry_bytes(
        rng.choice([1, 1, 7, 21, *odd[:9]]) % 128, dims,
        shard=rng.choice([0, 0, 1, 5]), offset=rng.choice([0, rng.randrange(1 << 20), 1 << 40]),
        size=rng.choice([0, 4, rng.randrange(1 << 21), 1 << 40])))
    return f"entry {os.path.basename(prefix)}.index"


def _argv(command: str, case: str, original: str, out: str, drop: str) -> list[str]:
    return {
        "verify": ["verify", case],
        "inspect": ["inspect", case],
        "diff": ["diff", original, case],
        "strip": ["strip", case, "--drop", drop, "--out", out, "--quiet"],
        "graft --dry-run": ["graft", case, "--at", "hiddens3", "--dense", "logits:10",
                            "--out", out, "--dry-run"],
    }[command]


def _clean_error(answer: dict) -> str | None:
    """None when the run ended in a clean error, else what is wrong with it."""
    lines = [ln for ln in answer["err"].splitlines()
             if ln.strip() and not ln.startswith("ckptsurgery: warning:")]
    if "Traceback" in answer["err"]:
        return "traceback"
    if answer["code"] != 2:
        return f"exit {answer['code']}: {lines[-1] if lines else ''}"
    if len(lines) != 1 or not lines[0].startswith("ckptsurgery: error: "):
        return f"stderr is not one error line: {lines}"
    return None


def _wrong_output(command: str, answer: dict, worker: Worker, case: str, out: str,
                  original: dict, drop: str) -> str | None:
    """None when a successful run's output is correct (module docstring), else why not."""
    text = answer["out"]
    if command == "verify":
        if "OK" not in text or not _same(worker.ask({"digest": case}), original):
            return "verify passed a checkpoint whose tensors differ from the original's"
    elif command == "inspect":
        missing = [n for n in original["digest"] if n not in text]
        if missing:
            return f"inspect does not list {missing[:3]}"
    elif command == "diff":
        expected = _expected_diff(original, worker.ask({"digest": case}))
        reported = {}
        for line in text.splitlines():
            parts = line.split()
            if line.startswith("  ") and len(parts) > 1 and parts[0] in _DIFF_STATUSES:
                reported[parts[1]] = parts[0]
        if reported != expected:
            wrong = {k: (reported.get(k), v) for k, v in expected.items() if reported.get(k) != v}
            return f"diff disagrees with the data (reported, actual): {wrong}"
    elif command == "strip":
        kept = {k: v for k, v in original["digest"].items() if not re.search(drop, k)}
        verified = worker.ask({"argv": ["verify", out]})
        if not _same(worker.ask({"digest": out}), {"digest": kept}) \
                or not isinstance(verified, dict) or verified["code"] != 0:
            return f"strip output is not the original minus {drop}, or does not verify"
    elif "dry run: nothing written" not in text or os.path.exists(out + ".index"):
        return "graft --dry-run printed no plan or wrote something"
    return None


_DIFF_STATUSES = ("identical", "changed", "reshaped", "retyped", "added", "removed")


def _same(held, expected: dict) -> bool:
    return isinstance(held, dict) and held.get("digest") == expected["digest"] \
        and not held.get("unreadable")


def _expected_diff(original: dict, held) -> dict[str, str]:
    """What diff ORIGINAL CASE must report per variable, from what each holds; a variable of
    the case that does not read back cannot be compared (diff must fail, so nothing matches)."""
    if not isinstance(held, dict) or "info" not in held:
        return {"<case unreadable>": "error"}
    a, b = original["info"], held["info"]
    out = {k: "removed" for k in a if k not in b} | {k: "added" for k in b if k not in a}
    for k in set(a) & set(b):
        if a[k] != b[k]:  # "dtype [shape]": the shape decides between reshaped and retyped
            out[k] = "reshaped" if a[k].split(" ", 1)[1] != b[k].split(" ", 1)[1] else "retyped"
        elif k in held["unreadable"]:
            out[k] = "unreadable"
        else:
            out[k] = "identical" if held["digest"][k] == original["digest"][k] else "changed"
    return out


@pytest.mark.slow
def test_fuzz_damaged_checkpoints(mlp_ckpt, tmp_path, record_property):
    summary, failures = _fuzz(mlp_ckpt, tmp_path, MUTATIONS, COMMANDS, drop="^logits/")
    record_property("summary", summary)
    assert not failures, "\n".join(failures[:20])
    assert MUTATIONS >= 300


@pytest.mark.slow
def test_fuzz_damaged_v1_checkpoint(shared, tmp_path, record_property):
    """The same on the pre-0.12 single-file format (a real one from the corpus)."""
    summary, failures = _fuzz(os.path.join(CORPUS, V1), tmp_path, 40,
                              ("verify", "inspect", "diff", "strip"), drop="^Variable_9$")
    record_property("summary", summary)
    assert not failures, "\n".join(failures[:20])


def _fuzz(source: str, tmp_path, mutations: int, commands, *, drop: str) -> tuple[str, list]:
    """Damage copies of ``source`` ``mutations`` times, run ``commands`` on each; returns the
    printed summary and the failures."""
    original_prefix = copy_checkpoint(source, str(tmp_path / "original"))
    worker = Worker(str(tmp_path / "worker.log"))
    rng = random.Random(SEED)
    outcomes: Counter = Counter()
    by_kind: Counter = Counter()
    failures: list[str] = []
    try:
        original = worker.ask({"digest": original_prefix})
        assert original["digest"] and not original["unreadable"]
        for i in range(mutations):
            case = copy_checkpoint(original_prefix, str(tmp_path / f"case{i}"))
            what = mutate(case, rng)
            if what.endswith(" checkpoint"):
                case = os.path.dirname(case)  # the damaged state file is what finds it
            for command in commands:
                out = os.path.join(str(tmp_path), f"out{i}", command.split()[0], "x.ckpt")
                answer = worker.ask({"argv": _argv(command, case, original_prefix, out, drop)})
                if isinstance(answer, str):
                    problem = answer
                elif answer["code"] == 0:
                    problem = _wrong_output(command, answer, worker, case, out, original, drop)
                else:
                    problem = _clean_error(answer) or _partial_output(out)
                result = ("ok" if answer["code"] == 0 else "clean error") \
                    if problem is None else "FAILED"
                outcomes[command, result] += 1
                by_kind[what.split()[0], result] += 1
                if problem:
                    failures.append(f"case {i} ({what}) {command}: {problem}")
            shutil.rmtree(tmp_path / f"case{i}")
            shutil.rmtree(tmp_path / f"out{i}", ignore_errors=True)
    finally:
        worker.close()
    runs = sum(outcomes.values())
    assert runs == mutations * len(commands)
    lines = [f"fuzz of {os.path.basename(source)}: {mutations} damaged copies x {len(commands)} "
             f"commands = {runs} runs, {len(failures)} failed, worker started "
             f"{worker.starts} time(s)"]
    for command in commands:
        lines.append(f"  {command:<16} ok {outcomes[command, 'ok']:>4}   clean error "
                     f"{outcomes[command, 'clean error']:>4}   FAILED "
                     f"{outcomes[command, 'FAILED']}")
    kinds = sorted({k for k, _ in by_kind})
    lines.append("  by damage (ok/clean error/failed): " + ", ".join(
        f"{k} {by_kind[k, 'ok']}/{by_kind[k, 'clean error']}/{by_kind[k, 'FAILED']}"
        for k in kinds))
    print("\n".join(lines))
    return "\n".join(lines), failures


def _partial_output(out: str) -> str | None:
    """None when a failed run left nothing at ``out``: no file, no temporary folder."""
    left = glob.glob(glob.escape(out) + "*") + glob.glob(
        os.path.join(glob.escape(os.path.dirname(out)), ".*tmp-*"))
    return f"partial output left: {left}" if left else None
