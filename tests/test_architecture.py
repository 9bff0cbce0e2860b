"""The package's layers: imports run downward only, never in a circle, and TensorFlow is imported
at module level only where the layers allow it (docs/architecture.md).

Imports are read from the source (every ``import`` and ``from ... import``, inside functions
too), so an upward import cannot hide in a function body.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import ckptsurgery

PACKAGE = os.path.join(ROOT, "ckptsurgery")

#: Layers from the bottom up; a module may import its own layer and those listed before it.
#: ``graft`` and ``migrate`` may both use everything below them; ``graft`` sits above ``migrate``
#: because the demo proves frozen layers with ``diff``.
LAYERS = ("errors", "formats", "graphdef", "safety", "graph", "train", "migrate", "graft",
          "testing", "pytest_plugin", "cli", "__main__", "__init__")

#: Layers whose modules may import TensorFlow at module level (everything else imports it
#: inside the functions that need it, so that ``--help`` and ``import ckptsurgery`` stay fast).
TF_AT_MODULE_LEVEL = ()


def _modules() -> dict[str, str]:
    """``{dotted module name under ckptsurgery: path}`` for every module of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
                out[rel] = path
    return out


def _layer(module: str) -> str:
    return module.split(".")[0]


def _imports(module: str, path: str) -> list[tuple[str, int, bool]]:
    """``(imported module under ckptsurgery or 'tensorflow...', line, at module level)``."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    top_level = {id(node) for node in tree.body}
    package = module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [
                    ".".join(base + [a.name]) for a in node.names]
                for name in names:
                    out.append((name, node.lineno, id(node) in top_level))
            elif node.module:
                out.append((node.module, node.lineno, id(node) in top_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, node.lineno, id(node) in top_level))
    return out


def _internal_edges() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, _, _ in _imports(module, path):
            if target.startswith("ckptsurgery."):
                target = target[len("ckptsurgery."):]
            while target and target not in modules and target + ".__init__" not in modules:
                target = target.rpartition(".")[0]  # a name imported from a package
            if target in modules:
                edges[module].add(target)
            elif target + ".__init__" in modules:
                edges[module].add(target + ".__init__")
    return edges


def test_every_module_belongs_to_a_layer():
    unknown = sorted(m for m in _modules() if _layer(m) not in LAYERS)
    assert not unknown, f"modules outside the layers of docs/architecture.md: {unknown}"


def test_imports_only_run_down_the_layers():
    upward = []
    for module, targets in _internal_edges().items():
        for target in targets:
            if LAYERS.index(_layer(target)) > LAYERS.index(_layer(module)):
                upward.append(f"{module} imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    edges = _internal_edges()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_tensorflow_is_imported_at_module_level_only_where_allowed():
    offenders = [f"{m}:{line}" for m, path in _modules().items()
                 for target, line, top in _imports(m, path)
                 if top and target.split(".")[0] in ("tensorflow", "tf_keras", "keras")
                 and _layer(m) not in TF_AT_MODULE_LEVEL]
    assert not offenders, f"module-level TensorFlow imports: {offenders}"


def test_the_library_never_imports_keras():
    offenders = [f"{m}:{line}" for m, path in _modules().items()
                 for target, line, _ in _imports(m, path)
                 if target.split(".")[0] in ("keras", "tf_keras")]
    assert not offenders


def test_importing_every_module_and_the_cli_parser_loads_no_tensorflow():
    names = sorted("ckptsurgery" if m == "__init__" else "ckptsurgery." + m.removesuffix(".__init__")
                   for m in _modules() if m != "__main__")
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "import ckptsurgery.cli as cli\ncli.build_parser()\n"
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_a_command_builds_only_its_own_options():
    """``ckptsurgery inspect`` does not import what other commands' choices come from (the
    rewrite, the demo's steps, layers, optimizers) nor the package metadata ``--version``
    reads; ``--version`` still prints on stdout, and a mistyped command lists all of them."""
    from conftest import FIXTURE_MLP

    heavy = ["ckptsurgery.migrate.rewrite", "ckptsurgery.graft.demo", "ckptsurgery.graph.layers",
             "ckptsurgery.train.optimizers", "importlib.metadata"]
    code = ("import contextlib, io, sys\nimport ckptsurgery.cli as cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    code = cli.main(['inspect', {FIXTURE_MLP!r}])\n"
            f"print(code, [m for m in {heavy!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.stdout.strip() == "0 []", proc.stderr
    version = subprocess.run([sys.executable, "-m", "ckptsurgery", "--version"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("ckptsurgery ")
    typo = subprocess.run([sys.executable, "-m", "ckptsurgery", "inspct", "x"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert typo.returncode == 2 and "invalid choice: 'inspct'" in typo.stderr
    assert "'inspect'" in typo.stderr and "'graft'" in typo.stderr


@pytest.mark.parametrize("name", ckptsurgery.__all__)
def test_each_public_name_resolves_and_is_in_its_modules_all(name):
    module = importlib.import_module(f"ckptsurgery.{ckptsurgery._EXPORTS[name]}")
    assert name in module.__all__, f"{name} is exported but not in {module.__name__}.__all__"
    assert getattr(ckptsurgery, name) is getattr(module, name)


def test_every_subpackage_says_what_it_owns_and_may_import():
    for layer in ("formats", "graphdef", "safety", "graph", "train", "migrate", "graft", "cli"):
        doc = importlib.import_module(f"ckptsurgery.{layer}").__doc__ or ""
        assert "may import" in doc.lower(), f"ckptsurgery.{layer} does not say what it may import"
