"""Running the command in a child process, so that a crash of TensorFlow becomes an error message.

TensorFlow's C++ code aborts the whole process on some malformed inputs (a failed ``CHECK``, an
allocation it cannot make): a signal, not an exception :func:`ckptsurgery.cli.main` could catch.
:mod:`ckptsurgery.formats.bundle` checks checkpoints before TensorFlow reads them; this is the net under
that check. :func:`run_guarded` forks *before* TensorFlow is imported (so the fork is safe and
costs about a millisecond: nothing is loaded twice), runs the command in the child, and turns the
child's death by a signal into the usual one line on stderr and exit code 1.

The child's stderr goes through the parent (a pseudo-terminal when stderr is a terminal, so
that progress bars still draw; a pipe otherwise), which drops TensorFlow's own log lines: the
C++ start-up chatter (absl's "All log messages before absl::InitializeLog()", CUDA probing,
CPU-feature notices) that the ``tensorflow`` wheel prints before it reads
``TF_CPP_MIN_LOG_LEVEL``, and fatal-log lines with their native stack dumps, whose failed check
it quotes in its own message. ``--verbose`` or ``CKPTSURGERY_TF_LOGS=1`` keep the log lines;
``--debug`` relays nothing (the child writes to stderr itself). Killing the parent kills the
child (Linux), so ``kill -9`` stops the work at once.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Sequence

__all__ = ["run_guarded", "console_main"]

PROG = "ckptsurgery"

# absl's fatal log line ("F0000 00:00:17.. 123 file.cc:42] Check failed: ...") and what follows it.
_FATAL_RE = re.compile(rb"^F\d{4} [\d:.]+\s+\d+ (?P<where>\S+)\] (?P<what>.*)$")
_DUMP_RE = re.compile(rb"^(\*\*\* |\s+@\s+0x|\s*$)")
# TensorFlow's non-fatal log lines: absl's format at levels I, W, E; the warning absl prints
# before it is set up; the second line of the CPU-feature notice; TFLite's notice of its CPU
# delegate (each tf.lite.Interpreter prints it).
_TF_LOG_RE = re.compile(rb"^\r?(?:[IWE]\d{4} [\d:.]+\s+\d+ \S+\] |WARNING: All log messages before "
                        rb"absl::InitializeLog\(\) is called|To enable the following instructions:"
                        rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)")
# An unfinished line that may still become one of those (held back until its newline).
_LOG_START_RE = re.compile(rb"^\r?(?:[IWEF]\d{0,4}(?: [\d:.]*(?:\s+\d*(?: \S*(?: .*)?)?)?)?"
                           rb"|W(?:A(?:R(?:N(?:I(?:N(?:G(?::.*)?)?)?)?)?)?)?|T(?:o.*)?"
                           rb"|I(?:N(?:F(?:O(?::.*)?)?)?)?)$")
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1


def run_guarded(main: Callable[[list[str] | None], int],
                argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` in a child process and return its exit code.

    Args:
        main: the command's entry point; it must not have imported TensorFlow in this process.
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The child's exit code; 1 when a signal ended it (with one line on stderr saying which and
        what TensorFlow reported), 128 + the signal number for SIGINT, SIGTERM and SIGKILL.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not hasattr(os, "fork") or "tensorflow" in sys.modules:
        return main(argv)  # no fork here, or too late for a safe one: run in this process
    debug = "--debug" in argv
    keep_logs = "--verbose" in argv or os.environ.get("CKPTSURGERY_TF_LOGS") == "1"
    sys.stdout.flush()
    sys.stderr.flush()
    piped = not debug
    read_fd, write_fd = _stderr_channel() if piped else (-1, -1)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(main, argv, parent, write_fd, read_fd, debug)  # never returns
    if piped:
        os.close(write_fd)
    # Forwarded: a signal sent to this process only (kill -INT PID) must reach the work. A
    # Ctrl-C reaches both processes, so the child may get SIGINT twice; it exits 130 quietly.
    old = {s: signal.signal(s, lambda sig, _f: _forward(pid, sig)) for s in _FORWARDED
           if signal.getsignal(s) is not signal.SIG_IGN}  # nohup, background jobs: keep ignoring
    try:
        fatal = _relay_stderr(read_fd, drop_logs=not keep_logs) if piped else None
        status = _wait(pid)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return _report_signal(os.WTERMSIG(status), argv, fatal)


def console_main() -> int:
    """The ``ckptsurgery`` console script: :func:`ckptsurgery.cli.main`, guarded."""
    from . import main

    return run_guarded(main)


def _child(main, argv, parent: int, write_fd: int, read_fd: int, debug: bool) -> None:
    code = 1
    try:
        _die_with_parent(parent)
        if write_fd >= 0:
            os.close(read_fd)
            os.dup2(write_fd, 2)
            os.close(write_fd)
        if debug:
            import faulthandler

            faulthandler.enable()
        code = main(argv)
    except KeyboardInterrupt:  # a second SIGINT while main() was reporting the first
        code = 130
    except SystemExit as e:  # argparse's --help, --version and usage errors
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:  # main() reports its own errors; anything left is a bug here
        import traceback

        traceback.print_exc()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) else 1)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when the parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(137)


def _stderr_channel() -> tuple[int, int]:
    """``(read end, write end)`` for the child's stderr: a pseudo-terminal of the terminal's
    size when stderr is a terminal (progress bars draw as before), a pipe otherwise."""
    if not _isatty(2):
        return os.pipe()
    import fcntl
    import termios

    master, slave = os.openpty()
    try:
        size = fcntl.ioctl(2, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
    except OSError:
        pass
    return master, slave


def _relay_stderr(fd: int, *, drop_logs: bool = True) -> bytes | None:
    """Copy the child's stderr to ours until it closes, minus fatal logs and their stack dumps
    and (``drop_logs``) TensorFlow's other log lines; return the fatal line, if any.

    An unfinished line (a progress bar redrawn with a carriage return) passes at once, unless
    it may still turn out to be a log line."""
    fatal, dropping, pending, passing = None, False, b"", False
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            try:
                chunk = pipe.read(65536)
            except InterruptedError:
                continue
            except OSError:  # a pseudo-terminal whose other end closed: EIO, not EOF
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = []
            for line in lines:
                line = line.removesuffix(b"\r")  # a pseudo-terminal's CR LF: the LF is added back
                m = None if passing else _FATAL_RE.match(line)
                if passing:
                    passing = False
                    out.append(line + b"\n")
                elif m:
                    fatal = fatal or m.group("what").strip() + b" (" + m.group("where") + b")"
                    dropping = True
                elif dropping and _DUMP_RE.match(line.rstrip(b"\r")):
                    continue
                elif drop_logs and _TF_LOG_RE.match(line):
                    dropping = False
                else:
                    dropping = False
                    out.append(line + b"\n")
            if pending and (passing or not (dropping or _LOG_START_RE.match(pending))):
                out.append(pending)
                pending, passing = b"", True
            if out:
                os.write(2, b"".join(out))
    if pending and not _FATAL_RE.match(pending) and not (drop_logs and _TF_LOG_RE.match(pending)):
        os.write(2, pending)
    return fatal


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _report_signal(sig: int, argv: list[str], fatal: bytes | None) -> int:
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    command = " ".join([PROG, *argv])
    if sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP):
        print(f"{PROG}: stopped by {name}", file=sys.stderr)
        return 128 + sig
    said = f": {fatal.decode('utf-8', 'replace')}" if fatal else ""
    print(f"{PROG}: internal error: TensorFlow crashed ({name}{said}) while running "
          f"'{command}'; the input is probably malformed in a way the checks before TensorFlow "
          "do not catch yet: please report it (rerun with --debug for the native stack)",
          file=sys.stderr)
    return 1


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
