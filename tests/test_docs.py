"""Every code block in README and docs/ runs as written, in a scratch folder per page.

What a block does depends on its fence:

- ```python: ``exec`` in this process (TensorFlow loads once), each block of a page in order with
  the globals of the blocks before it, as a reader would paste them; what it prints is dropped.
- ```console: lines starting with ``$ `` are commands (a line ending in ``\\`` continues on the
  next); the lines after a command, up to the next one, are its output as shown. Each shown line
  must be a line of what the command printed (stdout and stderr), in the order shown, with runs
  of spaces counted as one. Marker: ``...`` inside a line matches any text (timings, sizes that
  vary); a line that is only ``...`` stands for lines left out and matches nothing.
- ```sh: every line is a command (``\\`` continues it, ``#`` starts a comment); nothing is
  checked but the exit status.
- ```text (output, file layouts, diagrams, error messages): not run. A line of one that starts
  with ``ckptsurgery COMMAND`` is a usage synopsis: COMMAND must exist and each ``--option`` on
  the line must be in ``ckptsurgery COMMAND --help``.

Commands must be ``ckptsurgery ...``; they run in this process through ``cli.main`` (see
``run_cli`` in conftest), and must exit 0, or N when the command line ends in ``# exit N``, or 2
when the output shown has a ``ckptsurgery: error:`` line. A command whose output is a ``.png`` or
``.svg`` is skipped without Graphviz's ``dot``.

The scratch folder: a page runs in ``tmp/page`` holding a copy of ``fixtures/``, so that what
commands write never lands in the checkout, and ``tmp/shared`` points at ../shared (pages that
read it are skipped without it). A page may ask for more copies with an HTML comment in its
source, ``<!-- files: NAME=REPO_PATH ... -->`` (e.g. ``base=fixtures/mlp``: the MLP fixture's
folder at ``base/``).

A block preceded by ``<!-- not run: REASON -->`` is not run (a full MNIST run, ``pip install``);
``NOT_RUN`` below lists them, so that a new one is a decision, not an accident.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
import shutil
from dataclasses import dataclass

import pytest
from conftest import ROOT, SHARED
from safety_helpers import run_main

DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT)
                             for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
RUN = ("python", "console", "sh")

# (page, the first three words of the block) of every block marked <!-- not run: ... -->.
NOT_RUN = {
    ("README.md", "pip install -e"),                       # installs, then the demo or the suite
    ("README.md", "ckptsurgery demo #"),                   # the whole demo, 10-20 s
    ("docs/demo.md", "ckptsurgery demo #"),                # the same
    ("docs/getting-started.md", "pip install ckptsurgery"),  # installs, then the demo
    ("docs/graft.md", "# only hidden3,"),                  # 5 epochs on full MNIST, twice
    ("docs/graft.md", "python -m tf2onnx.convert"),        # tf2onnx's own command
    ("docs/families.md", "from transformers import"),      # torch + transformers: test_hf.py
    ("docs/remote.md", "pip install 'ckptsurgery[s3]'"),   # installs the extras
    ("docs/batch.md", "dask scheduler &"),                 # a Dask cluster of machines
}


@dataclass
class Block:
    doc: str
    lang: str
    code: str
    line: int
    not_run: str | None  # the reason given in <!-- not run: ... -->

    @property
    def first_words(self) -> str:
        return " ".join(self.code.split()[:3])


def read(doc: str) -> str:
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return f.read()


def blocks(doc: str) -> list[Block]:
    """The fenced code blocks of a page, with the reason of a ``not run`` comment before one."""
    text = read(doc)
    found = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M):
        before = text[:m.start()].rstrip()
        reason = re.search(r"<!-- not run: (.*?) -->$", before)
        found.append(Block(doc, m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1,
                           reason.group(1) if reason else None))
    return found


def page_files(doc: str) -> dict[str, str]:
    """NAME -> REPO_PATH from the page's ``<!-- files: ... -->`` comments."""
    pairs = re.findall(r"<!-- files: (.*?) -->", read(doc))
    return dict(item.split("=", 1) for line in pairs for item in line.split())


@dataclass
class Command:
    argv: list[str]
    shown: list[str]  # output lines shown under it (console blocks)
    exit: int


def commands(block: Block) -> list[Command]:
    """The commands of a console or sh block, each with the output shown and the exit expected."""
    out: list[Command] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if block.lang == "console" and not line.startswith("$ "):
            if out:
                out[-1].shown.append(line)
            continue
        text = line[2:] if block.lang == "console" else line
        while text.endswith("\\") and i < len(lines):
            text = text[:-1] + " " + lines[i].strip()
            i += 1
        argv = shlex.split(text, comments=True)
        if argv:
            code = re.search(r"#\s*exit (\d+)\s*$", text)
            out.append(Command(argv, [], int(code.group(1)) if code else 0))
    for c in out:
        if c.exit == 0 and any(s.startswith("ckptsurgery: error:") for s in c.shown):
            c.exit = 2
    return out


def shown_lines_match(shown: list[str], printed: str) -> str | None:
    """None when every shown line (``...`` a wildcard) is a printed line, in order; else the
    first shown line that is not."""
    def squash(s: str) -> str:
        return " ".join(s.split())

    actual = [squash(s) for s in printed.splitlines()]
    at = 0
    for line in shown:
        want = squash(line)
        if not want or want == "...":
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")) + r"\Z")
        while at < len(actual) and not pattern.match(actual[at]):
            at += 1
        if at == len(actual):
            return line
        at += 1
    return None


def prepare(doc: str, tmp_path) -> str:
    """The page's scratch folder: fixtures/ and the page's files copied, ../shared linked."""
    page = tmp_path / "page"
    shutil.copytree(os.path.join(ROOT, "fixtures"), page / "fixtures",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for name, source in page_files(doc).items():
        src = os.path.join(ROOT, source)
        if os.path.isdir(src):
            shutil.copytree(src, page / name)
        else:
            os.makedirs(os.path.dirname(page / name), exist_ok=True)
            shutil.copy(src, page / name)
    if os.path.isdir(SHARED):
        os.symlink(SHARED, tmp_path / "shared")
    return str(page)


def run_command(cmd: Command) -> None:
    if cmd.argv[0] != "ckptsurgery":
        pytest.fail(f"{' '.join(cmd.argv)}: only ckptsurgery commands run; mark the block "
                    "<!-- not run: REASON --> or write it as python")
    pictures = [a for a in cmd.argv if a.endswith((".png", ".svg"))]
    if pictures and shutil.which("dot") is None:
        return
    code, out, err = run_main(*cmd.argv[1:])
    printed = out + err
    assert code == cmd.exit, f"$ {shlex.join(cmd.argv)}\nexit {code}, expected {cmd.exit}\n{printed[-3000:]}"
    missing = shown_lines_match(cmd.shown, printed)
    assert missing is None, (f"$ {shlex.join(cmd.argv)}\nshown line not printed: {missing!r}\n"
                             f"printed:\n{printed[-3000:]}")


def runnable(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if b.lang in RUN and b.not_run is None]


@pytest.mark.parametrize("doc", [d for d in DOCS if runnable(d)])
def test_examples_run(doc, tmp_path):
    todo = runnable(doc)
    if "../shared" in read(doc) and not os.path.isdir(SHARED):
        pytest.skip("the examples read ../shared, which is not beside the checkout")
    where = prepare(doc, tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    here = os.getcwd()
    os.chdir(where)
    try:
        for b in todo:
            if b.lang == "python":
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(b.code, f"{doc}:{b.line} (python)", "exec"), namespace)  # noqa: S102
            else:
                for cmd in commands(b):
                    run_command(cmd)
    finally:
        os.chdir(here)


def test_usage_synopses_name_real_options():
    checked = 0
    for doc in DOCS:
        for b in blocks(doc):
            if b.lang != "text":
                continue
            for line in b.code.splitlines():
                m = re.match(r"(?:\$ )?ckptsurgery ([a-z]+)\b(.*)", line)
                if not m:
                    continue
                code, out, _ = run_main(m.group(1), "--help")
                assert code == 0 and "usage:" in out, f"{doc}:{b.line}: no command {m.group(1)!r}"
                for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(2)):
                    assert option in out, f"{doc}:{b.line}: {m.group(1)} has no {option}"
                checked += 1
    assert checked


def test_code_is_in_fenced_blocks_of_known_kinds():
    """Indented code blocks would escape the test above; every fence names its kind."""
    for doc in DOCS:
        text = re.sub(r"^```.*?^```$", "", read(doc), flags=re.S | re.M)
        indented = re.findall(r"\n\n( {4}\S.*)", text)
        assert not indented, f"{doc}: indented code, fence it as console/sh/text: {indented[:3]}"
        for b in blocks(doc):
            assert b.lang in (*RUN, "text"), f"{doc}:{b.line}: fence ```{b.lang}"


def test_blocks_not_run_are_the_listed_few(record_property):
    every = [b for d in DOCS for b in blocks(d)]
    marked = {(b.doc, b.first_words) for b in every if b.not_run}
    record_property("summary", f"docs: {sum(b.lang in RUN and not b.not_run for b in every)} "
                    f"code blocks run, {len(marked)} marked not run, "
                    f"{sum(b.lang == 'text' for b in every)} text blocks")
    assert marked == NOT_RUN, ("blocks marked <!-- not run --> changed; update NOT_RUN if that "
                               f"is meant: added {marked - NOT_RUN}, gone {NOT_RUN - marked}")


def test_the_main_pages_have_python_examples():
    for doc in ("README.md", "docs/graft.md", "docs/demo.md", "docs/migrate.md",
                "docs/safety.md", "docs/migration.md", "docs/api.md"):
        assert any(b.lang == "python" for b in blocks(doc)), f"{doc} has no python example"


def test_every_public_name_has_an_example_in_the_api_page():
    import ckptsurgery

    code = "\n".join(b.code for b in blocks("docs/api.md") if b.lang == "python")
    missing = [n for n in ckptsurgery.__all__ if not re.search(rf"\b{n}\b", code)]
    assert not missing, f"docs/api.md has no python example using {missing}"


def test_ci_runs_the_readme_test_command_and_the_demo_install_brings_no_test_tools():
    """The README's two commands are what a fresh machine runs: CI must run the second as
    written, and the first (the demo's) must not install the test extras (PyTorch is in them)."""
    sh = [b.code.strip() for b in blocks("README.md") if b.lang == "sh"]
    demo, tests = sh[0], sh[1]
    assert demo.endswith("ckptsurgery demo") and "[test]" not in demo, demo
    assert tests.endswith("python3 -m pytest") and "[test]" in tests, tests
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.strip() for line in f]
    assert tests in ci, f".ci/run does not run the README's test command {tests!r}"
