"""A quiet terminal: TensorFlow's own start-up and C++ log lines never reach the user (unless
``--verbose`` or ``CKPTSURGERY_TF_LOGS=1``, which :func:`_relay_stderr`'s ``drop_logs`` and the
tests of it cover), on a pipe and on a terminal, while our own lines, progress bars and
TensorFlow's fatal checks still come through."""

from __future__ import annotations

import fcntl
import os
import platform
import pty
import struct
import subprocess
import sys
import termios
import threading

import pytest
from conftest import FIXTURE_MLP, ROOT

from ckptsurgery.cli.crashguard import _relay_stderr

TF_LINES = (b"WARNING: All log messages before absl::InitializeLog() is called are written to "
            b"STDERR\n"
            b"I0000 00:00:1795994155.011201    5698 cudart_stub.cc:31] Could not find cuda drivers "
            b"on your machine, GPU will not be used.\n"
            b"E0000 00:00:1795994291.238825    6492 cuda_platform.cc:52] failed call to cuInit: "
            b"INTERNAL: CUDA error\n"
            b"I0000 00:00:1795994291.1 123 cpu_feature_guard.cc:210] This TensorFlow binary is "
            b"optimized to use available CPU instructions.\n"
            b"To enable the following instructions: AVX2 FMA, in other operations, rebuild.\n"
            b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")

# A user's environment: none of the switches the tests set or a user may have set.
_USER_ENV = {k: v for k, v in os.environ.items()
             if k not in ("CKPTSURGERY_TF_LOGS", "TF_ENABLE_ONEDNN_OPTS")}


def _relay(data: bytes, chunk: int = 7, **kwargs) -> tuple[bytes | None]:
    """Feed ``data`` through :func:`_relay_stderr` in small chunks (as a pipe may deliver it)."""
    read_fd, write_fd = os.pipe()

    def writer():
        for i in range(0, len(data), chunk):
            os.write(write_fd, data[i:i + chunk])
        os.close(write_fd)

    thread = threading.Thread(target=writer)
    thread.start()
    fatal = _relay_stderr(read_fd, **kwargs)
    thread.join()
    return fatal


def test_tensorflow_log_lines_are_dropped_and_ours_pass(capfd):
    _relay(TF_LINES + b"ckptsurgery: error: no checkpoint 'x'\n")
    assert capfd.readouterr().err == "ckptsurgery: error: no checkpoint 'x'\n"


def test_verbose_keeps_tensorflow_log_lines(capfd):
    _relay(TF_LINES + b"done\n", drop_logs=False)
    assert capfd.readouterr().err == (TF_LINES + b"done\n").decode()


def test_a_progress_bar_redrawn_without_newlines_passes_at_once(capfd):
    bar = b"\repoch 1/1:  10%|#  | 10/100\repoch 1/1:  50%|##### | 50/100"
    _relay(TF_LINES + bar, chunk=5)
    assert capfd.readouterr().err == bar.decode()


def test_a_fatal_check_is_returned_and_its_stack_dump_dropped(capfd):
    fatal = _relay(b"F0000 00:00:17.1 99 tensor_shape.cc:187] Check failed: size >= 0 (-5 vs. 0)\n"
                   b"*** Check failure stack trace: ***\n    @     0x7f00 abort\n\nafter\n")
    assert fatal == b"Check failed: size >= 0 (-5 vs. 0) (tensor_shape.cc:187)"
    assert capfd.readouterr().err == "after\n"


@pytest.fixture(scope="module")
def verbose_run() -> subprocess.CompletedProcess:
    """``ckptsurgery inspect --check-import`` (it loads TensorFlow to import the graph; verify
    no longer does) with TensorFlow's log lines let through (``--verbose``); the tests below are
    about the ``tensorflow`` wheel, which prints some at start-up. The environment is a
    user's: no ``TF_ENABLE_ONEDNN_OPTS`` (the tests' own setting), so TensorFlow turns oneDNN
    on and prints its notice, which the CLI leaves on and drops from stderr."""
    proc = subprocess.run([sys.executable, "-m", "ckptsurgery", "inspect", FIXTURE_MLP,
                           "--check-import", "--verbose"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=_USER_ENV)
    assert proc.returncode == 0, proc.stderr
    if "absl::InitializeLog" not in proc.stderr and "cuda" not in proc.stderr.lower():
        pytest.skip("this TensorFlow prints nothing at start-up")
    return proc


@pytest.mark.slow
def test_verbose_lets_tensorflow_log_lines_through(verbose_run):
    assert "imports      yes" in verbose_run.stdout
    assert any(line.startswith(("WARNING: All log messages", "I0000", "E0000", "W0000"))
               for line in verbose_run.stderr.splitlines())
    if platform.machine() == "x86_64":  # TF's default there, which the CLI keeps
        assert "oneDNN custom operations are on" in verbose_run.stderr


@pytest.mark.slow
def test_the_command_prints_no_tensorflow_line_on_a_pipe(verbose_run):
    proc = subprocess.run([sys.executable, "-m", "ckptsurgery", "inspect", FIXTURE_MLP,
                           "--check-import"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=_USER_ENV)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == verbose_run.stdout


@pytest.mark.slow
def test_on_a_terminal_progress_bars_draw_and_log_lines_do_not(verbose_run, tmp_path):
    """stderr a terminal: the child gets a pseudo-terminal of its own, so tqdm still draws."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "ckptsurgery", "demo", "base", "--epochs", "1",
                             "--out", str(tmp_path / "d")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=300) == 0, seen.decode(errors="replace")
    os.close(master)
    text = seen.decode(errors="replace")
    assert "epoch 1/1" in text and "batch" in text  # tqdm's bar
    assert "absl" not in text and "cuda" not in text.lower()
