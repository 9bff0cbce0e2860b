"""Model families (BERT, ALBERT, ELECTRA, GPT-2): recognised from a checkpoint's names and
shapes, without TensorFlow, and described by a table of rules kept as data.

Each family is one JSON file in ``ckptsurgery/migrate/family_rules/`` (the format is in
``docs/families.md``): the names that recognise it, what its shapes tell (``read``: layers,
widths, vocabulary), what only its config file tells (``config_only``: attention heads,
activation), the ``defaults`` its code uses when a run's config does not say (ELECTRA's
attention heads: ``max(1, hidden_size // 64)``), its heads and the architecture each one
makes, its config for Hugging Face ``transformers``, its tokenizer files, and its rules:
source-name pattern -> target name, transform and the source shape the config implies, or
skip with a reason. One engine
(:mod:`ckptsurgery.migrate.hf`) applies every table; ``--rules FILE`` adds a table or overrides
rules of one, in the same format.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
from dataclasses import dataclass, field

from ..errors import UserError

__all__ = ["TRANSFORMS", "Rule", "Head", "Family", "FamilyReport", "builtin_families",
           "load_family", "families_with", "recognise", "evaluate"]

RULES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "family_rules")

#: What a rule may do to a tensor: keep it, transpose a 2-D kernel (``[in, out]`` to
#: ``[out, in]``), or drop its leading 1s (GPT-2's ``[1, in, out]`` convolution weights).
TRANSFORMS = ("none", "transpose", "squeeze")


@dataclass(frozen=True)
class Rule:
    """Source names matching ``match`` become ``to`` (``\\1`` is the pattern's first group),
    through ``transform``, when their shape is ``shape`` (config names, ints, ``3*n_embd``);
    ``heads`` limits it to some heads; ``skip`` leaves the variable out with that reason."""

    match: re.Pattern
    to: str | None = None
    transform: str = "none"
    shape: tuple = ()
    heads: tuple[str, ...] | None = None
    skip: str | None = None


@dataclass(frozen=True)
class Head:
    """A head the family's checkpoints may carry: present when all of ``when`` match a name;
    ``architecture`` is the ``transformers`` class it loads into; ``read`` adds config values
    read from its shapes (the number of labels); ``strip_prefix`` is cut off every target."""

    name: str
    about: str
    architecture: str
    when: tuple[re.Pattern, ...] = ()
    read: dict = field(default_factory=dict)
    strip_prefix: str = ""


@dataclass(frozen=True)
class Family:
    """One family's table (see the module's docstring)."""

    name: str
    about: str
    recognise: tuple[re.Pattern, ...]
    config_files: tuple[str, ...]
    read: dict
    config_only: tuple[str, ...]
    defaults: dict
    hf_config: dict
    heads: tuple[Head, ...]
    tokenizer: dict
    rules: tuple[Rule, ...]

    def matches(self, names) -> bool:
        """Whether every recognising pattern matches one of ``names``."""
        return bool(self.recognise) and all(any(p.search(n) for n in names)
                                            for p in self.recognise)


def _pattern(text: str, where: str) -> re.Pattern:
    try:
        return re.compile(text)
    except (re.error, TypeError) as e:
        raise UserError(f"{where}: bad regex {text!r}: {e}") from e


def _rule(data: dict, where: str) -> Rule:
    if not isinstance(data, dict) or "match" not in data or ("to" in data) == ("skip" in data):
        raise UserError(f"{where}: a rule is {{\"match\": REGEX, \"to\": NAME}} or "
                        f"{{\"match\": REGEX, \"skip\": REASON}}, not {json.dumps(data)}")
    transform = data.get("transform", "none")
    if transform not in TRANSFORMS:
        raise UserError(f"{where}: rule {data['match']!r}: unknown transform {transform!r}; "
                        f"choose one of {', '.join(TRANSFORMS)}")
    heads = data.get("heads")
    return Rule(_pattern(data["match"], where), data.get("to"), transform,
                tuple(data.get("shape", ())), tuple(heads) if heads is not None else None,
                data.get("skip"))


def load_family(path: str, known: dict[str, Family] | None = None) -> Family:
    """The table in the JSON file ``path``; when it names a family of ``known``, the file's
    rules come before that family's (so they override them) and its other fields replace
    the family's.

    Raises:
        UserError: the file is missing, not JSON, or not a family table.
    """
    data = _read_json(path, "rules")
    if not isinstance(data.get("family"), str):
        raise UserError(f"rules '{path}' has no \"family\" name; see docs/families.md")
    base = (known or {}).get(data["family"])
    if base is None and not data.get("rules"):
        raise UserError(f"rules '{path}': family '{data['family']}' has no \"rules\"")
    where = f"rules '{path}'"
    rules = tuple(_rule(r, where) for r in data.get("rules", ()))
    heads = tuple(Head(h["name"], h.get("about", h["name"]), h["architecture"],
                       tuple(_pattern(w, where) for w in h.get("when", ())), h.get("read", {}),
                       h.get("strip_prefix", "")) for h in data.get("heads", ()))
    if base is not None:
        return Family(
            base.name, data.get("about", base.about),
            tuple(_pattern(p, where) for p in data["recognise"]) if "recognise" in data
            else base.recognise,
            tuple(data.get("config_files", base.config_files)), data.get("read", base.read),
            tuple(data.get("config_only", base.config_only)),
            data.get("defaults", base.defaults), data.get("hf_config", base.hf_config),
            heads or base.heads,
            data.get("tokenizer", base.tokenizer), rules + base.rules)
    if not heads:
        raise UserError(f"{where}: family '{data['family']}' has no \"heads\" (at least one, "
                        "with the transformers architecture it makes)")
    return Family(data["family"], data.get("about", data["family"]),
                  tuple(_pattern(p, where) for p in data.get("recognise", ())),
                  tuple(data.get("config_files", ())), data.get("read", {}),
                  tuple(data.get("config_only", ())), data.get("defaults", {}),
                  data.get("hf_config", {}), heads,
                  data.get("tokenizer", {}), rules)


@functools.cache
def builtin_families() -> dict[str, Family]:
    """The families the package knows, by name, from ``family_rules/*.json``."""
    out = {}
    for name in sorted(os.listdir(RULES_DIR)):
        if name.endswith(".json"):
            family = load_family(os.path.join(RULES_DIR, name))
            out[family.name] = family
    return out


def families_with(rules: str | None) -> dict[str, Family]:
    """The built-in families, with the table of ``rules`` (a ``--rules FILE``) merged into the
    family it names or, for a family the package does not know, added before the others."""
    families = builtin_families()
    if rules is None:
        return dict(families)
    family = load_family(rules, families)
    return {family.name: family, **{k: v for k, v in families.items() if k != family.name}}


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.FloorDiv: lambda a, b: a // b}
_CALLS = {"max": max, "min": min}


def evaluate(expression, values: dict):
    """An int, a config name, or a small expression of them (``3*n_embd``, ``n_vocab-1``,
    ``max(1, hidden_size // 64)``).

    Raises:
        KeyError: a name ``values`` does not hold.
    """
    if isinstance(expression, int):
        return expression

    def walk(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in _CALLS and node.args and not node.keywords):
            return _CALLS[node.func.id](*(walk(a) for a in node.args))
        raise UserError(f"expression {expression!r}: only ints, config names, + - * // , max "
                        "and min")

    return walk(ast.parse(str(expression), mode="eval").body)


@dataclass
class FamilyReport:
    """What :func:`recognise` made of a checkpoint: the ``family`` (``generic`` when none),
    the ``head`` and the ``architecture`` it makes (``heads``: every head the checkpoint
    holds, by name, with its architecture), the config values ``read`` from names and shapes,
    the config file's values (``config``, from ``config_source``), the family's ``defaults``
    used where neither gives a value, the config-only fields still ``missing``, and
    ``conflicts`` (``{name: (from shapes, from config)}``)."""

    family: str
    about: str = ""
    head: str | None = None
    head_about: str | None = None
    architecture: str | None = None
    heads: dict[str, str] = field(default_factory=dict)
    read: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    config_source: str | None = None
    defaults: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    conflicts: dict[str, tuple] = field(default_factory=dict)

    @property
    def values(self) -> dict:
        """The config as the source code saw it: the file's fields over the shapes', over the
        family's defaults."""
        return {**self.defaults, **self.read, **self.config}

    def as_dict(self) -> dict:
        return {"family": self.family, "about": self.about, "head": self.head,
                "head_about": self.head_about, "architecture": self.architecture,
                "heads": self.heads, "read": self.read, "config": self.config,
                "config_source": self.config_source, "defaults": self.defaults,
                "missing": self.missing,
                "conflicts": {k: {"shapes": a, "config": b} for k, (a, b) in
                              self.conflicts.items()}}

    def lines(self) -> list[str]:
        if self.family == "generic":
            return ["family       generic (not the names of "
                    f"{', '.join(builtin_families())}; see docs/families.md)"]
        read = ", ".join(f"{k} {v}" for k, v in self.read.items())
        out = [f"family       {self.family}: {read}",
               f"head         {self.head}: {self.head_about} -> {self.architecture}"]
        others = [f"{k} -> {v}" for k, v in self.heads.items() if k != self.head]
        if others:
            out.append(f"             also here: {', '.join(others)} (convert --head NAME)")
        if self.config_source:
            shown = ", ".join(f"{k} {v}" for k, v in self.config.items() if k not in self.read)
            out.append(f"config       {self.config_source}: {shown}")
        elif self.missing:
            out.append("config       none found: " + ", ".join(self.missing)
                       + " unknown; put the release's config beside the checkpoint or pass "
                       "--config FILE")
        else:
            out.append("config       none found (none needed)")
        if self.defaults:
            out.append("defaults     " + ", ".join(f"{k} {v}" for k, v in self.defaults.items())
                       + f" (what {self.family}'s code uses unless its config says otherwise; "
                       "--config FILE if the run changed them)")
        out += [f"             CONFLICT {k}: the shapes say {a}, the config says {b}"
                for k, (a, b) in self.conflicts.items()]
        return out


def recognise(shapes: dict[str, tuple], *, folder: str, config: str | None = None,
              families: dict[str, Family] | None = None,
              head: str | None = None) -> tuple[FamilyReport, Family | None]:
    """Which family the checkpoint whose variables have ``shapes`` (``{name: shape}``)
    belongs to, read from names and shapes only, with the config file beside it (in
    ``folder``, a name of the family's ``config_files``) or ``config``; ``head`` picks one of
    the heads the checkpoint holds (an ELECTRA's generator) instead of the first.

    Returns:
        ``(report, family)``; ``family`` is None for ``generic``.

    Raises:
        UserError: ``config`` cannot be read or is not a JSON object; the checkpoint has no
            head ``head``.
    """
    families = builtin_families() if families is None else families
    names = list(shapes)
    family = next((f for f in families.values() if f.matches(names)), None)
    if family is None:
        return FamilyReport("generic"), None
    present = [h for h in family.heads if all(any(p.search(n) for n in names) for p in h.when)]
    chosen = present[0] if head is None else next((h for h in present if h.name == head), None)
    if chosen is None:
        raise UserError(f"--head {head}: this {family.name} checkpoint has the heads "
                        f"{', '.join(h.name for h in present)}; choose one of them")
    report = FamilyReport(family.name, family.about, chosen.name, chosen.about,
                          chosen.architecture, {h.name: h.architecture for h in present})
    head = chosen
    for key, how in {**family.read, **head.read}.items():
        if "count" in how:
            pattern = re.compile(how["count"])
            report.read[key] = len({m.group(1) for n in names if (m := pattern.search(n))})
        elif how.get("shape") in shapes:
            report.read[key] = int(shapes[how["shape"]][how["dim"]])
    path = config or next((p for p in (os.path.join(folder, c) for c in family.config_files)
                           if os.path.isfile(p)), None)
    if path is not None:
        report.config = _read_json(path, "config")
        report.config_source = (f"--config {path}" if config else
                                f"{os.path.basename(path)} beside the checkpoint")
    values = report.values
    for key, value in family.defaults.items():
        if key in values:
            continue
        try:
            report.defaults[key] = (evaluate(value["eval"], values) if isinstance(value, dict)
                                    else value)
        except KeyError:  # of values the shapes do not give either: unknown, as they are
            pass
    values = report.values
    report.missing = [k for k in family.config_only if k not in values]
    report.conflicts = {k: (v, report.config[k]) for k, v in report.read.items()
                        if k in report.config and report.config[k] != v}
    return report, family


def _read_json(path: str, what: str) -> dict:
    """The JSON object in ``path``, a ``what`` (``rules``, ``config``) file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise UserError(f"cannot read {what} '{path}': {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise UserError(f"{what} '{path}' is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise UserError(f"{what} '{path}' is not a JSON object")
    return data
