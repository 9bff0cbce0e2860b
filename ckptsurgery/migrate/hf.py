"""A family's TF1 checkpoint as a folder Hugging Face ``transformers`` loads with
``from_pretrained``: ``config.json``, ``model.safetensors`` (sharded past a size, with
``model.safetensors.index.json``), and the tokenizer files when the vocabulary is beside the
checkpoint. Without TensorFlow.

The family's table (:mod:`ckptsurgery.migrate.family`) decides every name: each source variable
is written under a target name (transposed or squeezed as its rule says), or left out for a
stated reason (optimizer state, a step counter, ``--drop``, not part of the architecture its
heads make). A variable no rule claims, a shape that does not fit the config, and a config that
is needed but missing are errors before anything is written. Tensors stream from the bundle
reader into the staged folder one piece at a time (a transpose larger than a piece is done in
blocks of output rows), each file is read back and checked against what was written, and only
then is the folder renamed into place.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import OutputError, UserError
from ..formats.safetensors import DTYPES
from ..graphdef.roles import classify
from ..graphdef.slots import describe
from .family import FamilyReport, evaluate, families_with, recognise
from .rewrite import compile_patterns

__all__ = ["DEFAULT_MAX_SHARD_SIZE", "Mapping", "HfPlan", "HfResult", "plan_hf",
           "convert_to_hf", "parse_size"]

#: transformers' own default for ``save_pretrained(max_shard_size=...)``.
DEFAULT_MAX_SHARD_SIZE = 5 * 10**9
_LEFT_OUT = {"slot": "optimizer slot", "optimizer": "optimizer state", "step": "step counter",
             "ema": "moving average"}


@dataclass
class Mapping:
    """One source variable's verdict: ``target`` (with ``transform`` and the written
    ``shape``), or the ``reason`` it is left out; ``problem`` when it stops the conversion."""

    source: str
    target: str | None = None
    transform: str = "none"
    shape: tuple = ()
    dtype: str = ""
    nbytes: int = 0
    reason: str | None = None
    kind: str | None = None  # the reason's kind, for the summary: "optimizer slot"...
    problem: str | None = None

    def line(self, width: int) -> str:
        if self.problem:
            return f"  {self.source:<{width}}  ERROR: {self.problem}"
        if self.target is None:
            return f"  {self.source:<{width}}  left out: {self.reason}"
        how = "" if self.transform == "none" else f"  ({self.transform})"
        return f"  {self.source:<{width}}  -> {self.target}{how}"


@dataclass
class HfPlan:
    """What a conversion writes: the family as recognised, a :class:`Mapping` per source
    variable (in the checkpoint's order), the ``config.json``, and the tokenizer files
    (``{source path: name in the folder}``) with their ``tokenizer_config.json``."""

    prefix: str
    family: FamilyReport
    mappings: list[Mapping]
    config: dict = field(default_factory=dict)
    tokenizer: dict[str, str] = field(default_factory=dict)
    tokenizer_config: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def written(self) -> list[Mapping]:
        return [m for m in self.mappings if m.target is not None and not m.problem]

    def lines(self) -> list[str]:
        f = self.family
        left = len(self.mappings) - len(self.written)
        out = [f"checkpoint   {self.prefix}",
               f"family       {f.family}, head {f.head} -> {f.architecture}; config from "
               f"{f.config_source or 'none'}",
               f"mapping      {len(self.mappings)} variables: {len(self.written)} written, "
               f"{left} left out"]
        width = max([len(m.source) for m in self.mappings] + [4])
        out += [m.line(width) for m in self.mappings]
        if self.tokenizer:
            out.append("tokenizer    " + ", ".join(f"{os.path.basename(s)} -> {n}"
                                                   for s, n in self.tokenizer.items()))
        out += [f"problem      {p}" for p in self.problems]
        return out

    def as_dict(self) -> dict:
        return {"prefix": self.prefix, "family": self.family.as_dict(), "config": self.config,
                "mappings": [{"source": m.source, "target": m.target, "transform": m.transform,
                              "shape": list(m.shape), "reason": m.reason, "problem": m.problem}
                             for m in self.mappings],
                "tokenizer": self.tokenizer, "problems": self.problems}


@dataclass
class HfResult:
    """A written folder: its files, the tensors and bytes written, and the plan."""

    out: str
    plan: HfPlan
    files: list[str]
    tensors: int
    bytes_written: int

    def lines(self) -> list[str]:
        plan, f = self.plan, self.plan.family
        left: dict[str, int] = {}
        for m in plan.mappings:
            if m.target is None:
                left[m.kind] = left.get(m.kind, 0) + 1
        out = [f"wrote {self.out} ({f.architecture}, {f.family}): {self.tensors} tensor(s), "
               f"{self.bytes_written:,} bytes; files {', '.join(self.files)}"]
        if left:
            out.append("left out: " + "; ".join(f"{n} {r}" for r, n in left.items()))
        return out

    def as_dict(self) -> dict:
        return {"out": self.out, "files": self.files, "tensors": self.tensors,
                "bytes": self.bytes_written, "plan": self.plan.as_dict()}


def parse_size(text: str) -> int:
    """``5GB``, ``500MB``, ``2GiB``, ``1000`` -> bytes (transformers' units: GB = 10**9)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", text, re.I)
    if not m:
        raise UserError(f"--max-shard-size '{text}': give a size such as 5GB, 500MB or 2GiB")
    unit = (m.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10,
             "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return max(1, int(float(m.group(1)) * scale))


def plan_hf(checkpoint, *, config: str | None = None, rules: str | None = None,
            drop: Sequence[str] = (), head: str | None = None) -> HfPlan:
    """The conversion of ``checkpoint`` (an opened checkpoint) as its family's table says.

    Args:
        config: the family's config file, when it is not beside the checkpoint.
        rules: a rules file (``--rules``) adding a family or overriding rules of one.
        drop: regexes (``re.search``) of variables to leave out.
        head: which of the checkpoint's heads to write (an ELECTRA's ``generator``), when not
            the first the family's table lists.

    Returns:
        The plan; its ``problems`` (unknown variables, shapes the config does not give, a
        missing config) are what :func:`convert_to_hf` refuses to write.

    Raises:
        UserError: the checkpoint is of no family with rules, or has no head ``head``; a bad
            regex or rules file.
    """
    variables = checkpoint.variables
    report, family = recognise({k: v.shape for k, v in variables.items()},
                               folder=os.path.dirname(checkpoint.prefix), config=config,
                               families=families_with(rules), head=head)
    if family is None:
        raise UserError(f"'{checkpoint.prefix}' is of no family with rules (its names are none "
                        f"of {', '.join(families_with(rules))}'s); describe it with --rules "
                        "FILE (docs/families.md)")
    drops = compile_patterns(drop, "--drop")
    chosen = next(h for h in family.heads if h.name == report.head)
    values = report.values
    roles = classify(list(variables), checkpoint.meta_graph)
    plan = HfPlan(checkpoint.prefix, report, [])
    for key, info in variables.items():
        m = Mapping(key, dtype=info.dtype, nbytes=info.nbytes)
        plan.mappings.append(m)
        role = roles[key]
        if role.kind in _LEFT_OUT:
            m.kind = _LEFT_OUT[role.kind]
            m.reason = {"slot": f"optimizer {describe(role)}",
                        "ema": f"{describe(role)} (the weight itself is written)"}.get(
                role.kind, m.kind)
            continue
        dropped = next((d for d in drops if d.search(key)), None)
        if dropped is not None:
            m.reason = m.kind = f"--drop {dropped.pattern}"
            continue
        # the first rule for this head decides; a rule only for other heads leaves it out
        matching = [(r, mm) for r in family.rules if (mm := r.match.search(key))]
        rule, match = next(((r, mm) for r, mm in matching
                            if r.heads is None or chosen.name in r.heads), (None, None))
        if rule is None and matching:
            m.reason = m.kind = f"not part of {chosen.architecture}"
            continue
        if rule is None:
            m.problem = "no rule maps it"
            continue
        if rule.skip:
            m.reason = m.kind = rule.skip
            continue
        m.target = match.expand(rule.to)
        if chosen.strip_prefix and m.target.startswith(chosen.strip_prefix):
            m.target = m.target[len(chosen.strip_prefix):]
        m.transform = rule.transform
        m.shape = _written_shape(info.shape, rule.transform)
        m.problem = _shape_problem(key, info.shape, rule, values, report)
        if info.dtype not in DTYPES:
            m.problem = f"'{key}' is {info.dtype}, which safetensors cannot store"
    _collect_problems(plan, family, report)
    if not plan.problems:
        plan.config = _hf_config(family, report, chosen)
        plan.tokenizer, plan.tokenizer_config = _tokenizer(family, report, checkpoint.prefix)
    return plan


def _written_shape(shape: tuple, transform: str) -> tuple:
    if transform == "transpose":
        return tuple(reversed(shape))
    if transform == "squeeze":
        rest = list(shape)
        while len(rest) > 1 and rest[0] == 1:
            rest.pop(0)
        return tuple(rest)
    return tuple(shape)


def _shape_problem(key: str, shape: tuple, rule, values: dict, report: FamilyReport) -> str | None:
    if not rule.shape:
        return None
    try:
        expected = tuple(evaluate(d, values) for d in rule.shape)
    except KeyError as e:
        return f"its rule's shape needs {e.args[0]}, which neither the shapes nor the config give"
    if expected == tuple(shape):
        return None
    names = ", ".join(str(d) for d in rule.shape)
    where = report.config_source or "the shapes"
    return (f"'{key}' has shape {list(shape)}, but {where} makes it {list(expected)} "
            f"({names})")


def _collect_problems(plan: HfPlan, family, report: FamilyReport) -> None:
    unknown = [m.source for m in plan.mappings if m.problem == "no rule maps it"]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f", ... ({len(unknown)} in all)"
                                          if len(unknown) > 5 else "")
        plan.problems.append(f"{len(unknown)} variable(s) of '{plan.prefix}' match no rule of "
                             f"family '{family.name}': {shown}; map them with --rules FILE or "
                             "leave them out with --drop REGEX")
    shapes = [m.problem for m in plan.mappings if m.problem and m.source not in unknown]
    if shapes:
        more = f" ({len(shapes) - 1} more variable(s) disagree)" if len(shapes) > 1 else ""
        plan.problems.append(shapes[0] + more)
    if report.missing:
        files = " or ".join(family.config_files) or "config file"
        plan.problems.append(f"family '{family.name}' needs {', '.join(report.missing)} from "
                             f"its config: no {files} beside '{plan.prefix}'; pass --config "
                             "FILE")
    targets: dict[str, str] = {}
    for m in plan.written:
        if m.target in targets:
            plan.problems.append(f"'{targets[m.target]}' and '{m.source}' would both be "
                                 f"written as '{m.target}'; fix the rules")
        targets[m.target] = m.source


def _hf_config(family, report: FamilyReport, head) -> dict:
    """``config.json``: the architecture, then every config field the table maps, each value
    translated to what means the same in transformers (BERT's ``gelu`` is the tanh GELU,
    transformers' ``gelu_new``)."""
    spec = family.hf_config
    values = report.values
    out = {"architectures": [head.architecture], "model_type": spec.get("model_type",
                                                                       family.name)}
    for source, target in spec.get("fields", {}).items():
        if source not in values:
            continue
        value = values[source]
        translate = spec.get("values", {}).get(source)
        if translate is not None:
            if value not in translate:
                raise UserError(f"{report.config_source or 'the config'}: {source} "
                                f"'{value}' has no known transformers equivalent (known: "
                                f"{', '.join(translate)}); override it with --rules FILE")
            value = translate[value]
        out[target] = value
    for target, expression in spec.get("derived", {}).items():
        out[target] = evaluate(expression, values)
    out.update(spec.get("fixed", {}))
    return out


def _tokenizer(family, report: FamilyReport, prefix: str) -> tuple[dict[str, str], dict]:
    """The tokenizer files beside the checkpoint (``{path: name in the folder}``; a source
    name may be a glob: ALBERT's SentencePiece model is ``30k-clean.model`` or another
    ``*.model``) and their ``tokenizer_config.json``.

    Raises:
        UserError: a glob matches more than one file (which is the tokenizer is unknown).
    """
    spec = family.tokenizer
    folder = os.path.dirname(prefix)
    files = {}
    for src, dst in spec.get("files", {}).items():
        found = sorted(p for p in glob.glob(os.path.join(glob.escape(folder), src))
                       if os.path.isfile(p))
        if len(found) > 1:
            raise UserError(f"{len(found)} files match {src!r} beside '{prefix}' "
                            f"({', '.join(os.path.basename(p) for p in found)}): which is the "
                            f"{family.name} tokenizer's {dst} is unknown; keep only it there")
        files.update((p, dst) for p in found)
    if not files:
        return {}, {}
    config = dict(spec.get("config", {}))
    if spec.get("max_length") in report.values:
        config["model_max_length"] = report.values[spec["max_length"]]
    vocab = spec.get("lowercase_unless_cased")
    if vocab and os.path.isfile(os.path.join(folder, vocab)):
        with open(os.path.join(folder, vocab), encoding="utf-8") as f:
            # Google's cased vocabularies hold capitals; the uncased ones only [CLS]-like marks
            config["do_lower_case"] = not any(
                c.isupper() for line in f if not line.startswith("[") for c in line)
    return files, config


def convert_to_hf(path: str, out: str, *, config: str | None = None, rules: str | None = None,
                  drop: Sequence[str] = (), head: str | None = None, dry_run: bool = False,
                  max_shard_size: int = DEFAULT_MAX_SHARD_SIZE, force: bool = False,
                  progress: bool = True, max_batch_bytes: int | None = None
                  ) -> HfPlan | HfResult:
    """Convert the checkpoint at ``path`` into the transformers folder ``out``; with
    ``dry_run`` only plan it (the plan is returned, problems and all).

    Raises:
        UserError: see :func:`plan_hf`; its problems, the first one named (nothing written).
        OutputError: ``out`` exists (no ``force``), holds the input, or cannot be written.
    """
    from ..formats.checkpoint import open_checkpoint
    from ..formats.output import check_output_path, staged_path
    from ..formats.stream import DEFAULT_BATCH_BYTES

    checkpoint = open_checkpoint(path)
    plan = plan_hf(checkpoint, config=config, rules=rules, drop=drop, head=head)
    if dry_run:
        return plan
    if plan.problems:
        raise UserError(plan.problems[0] + (f" (and {len(plan.problems) - 1} more problem(s); "
                                            "--dry-run lists them)"
                                            if len(plan.problems) > 1 else ""))
    out = check_output_path(out, inputs=checkpoint.files.paths, force=force)
    shards = _shards(plan.written, max_shard_size)
    batch = max_batch_bytes or DEFAULT_BATCH_BYTES
    written: dict[str, list] = {}
    with staged_path(out, check=lambda tmp: _verify(tmp, written, batch)) as tmp:
        os.makedirs(tmp)
        total = _write_shards(checkpoint, shards, tmp, batch, progress, written)
        _write_json(os.path.join(tmp, "config.json"), plan.config)
        for source, name in plan.tokenizer.items():
            shutil.copyfile(source, os.path.join(tmp, name))
        if plan.tokenizer:
            _write_json(os.path.join(tmp, "tokenizer_config.json"), plan.tokenizer_config)
        files = sorted(os.listdir(tmp))
    return HfResult(out, plan, files, len(plan.written), total)


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _shards(mappings: list[Mapping], limit: int) -> list[list[Mapping]]:
    """The tensors in target-name order, cut into files of at most ``limit`` bytes (a larger
    tensor is a file of its own), as transformers shards."""
    shards: list[list[Mapping]] = [[]]
    size = 0
    for m in sorted(mappings, key=lambda m: m.target):
        if shards[-1] and size + m.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(m)
        size += m.nbytes
    return shards


def _shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def _write_shards(checkpoint, shards, folder: str, batch: int, progress: bool,
                  written: dict[str, list]) -> int:
    """Write the shards (and the index past one); record in ``written`` each file's
    ``(target, dtype, shape, nbytes, crc)`` for the check."""
    from ..formats.crc import crc32c
    from ..formats.safetensors import header_bytes
    from ..formats.stream import progress_bar

    names = _shard_names(len(shards))
    total = sum(m.nbytes for shard in shards for m in shard)
    source = os.path.basename(checkpoint.prefix)
    with progress_bar(total, "converting", progress) as bar:
        for name, shard in zip(names, shards, strict=True):
            entries = []
            with open(os.path.join(folder, name), "wb") as f:
                f.write(header_bytes([(m.target, m.dtype, m.shape, m.nbytes) for m in shard],
                                     {"format": "pt", "source": source}))
                for m in shard:
                    crc = 0
                    for piece in _output_pieces(checkpoint, m, batch):
                        f.write(memoryview(piece.reshape(-1).view("uint8")))
                        crc = crc32c(piece, crc)
                        bar.update(piece.nbytes)
                    entries.append((m.target, m.dtype, list(m.shape), m.nbytes, crc))
            written[name] = entries
    if len(names) > 1:
        _write_json(os.path.join(folder, "model.safetensors.index.json"), {
            "metadata": {"total_size": total},
            "weight_map": {m.target: name for name, shard in zip(names, shards, strict=True)
                           for m in shard}})
    return total


def _output_pieces(checkpoint, m: Mapping, batch: int):
    """The target tensor's bytes in C order, piece by piece. A squeeze keeps the bytes; a
    transpose of a kernel up to ``batch`` bytes is done whole, a larger one in blocks of
    output rows, each gathered from one pass over the source (a block and a source piece in
    memory at a time)."""
    import numpy as np

    if m.transform != "transpose":
        yield from checkpoint.pieces(m.source, batch)
        return
    rows, cols = checkpoint.variables[m.source].shape
    if m.nbytes <= batch:
        yield np.ascontiguousarray(checkpoint.read(m.source).reshape(rows, cols).T)
        return
    width = m.nbytes // (rows * cols)
    row_bytes = cols * width
    step = max(1, batch // (rows * width))  # output rows per block
    for j0 in range(0, cols, step):
        j1 = min(cols, j0 + step)
        block = None
        r0 = 0
        # row-aligned pieces: each holds whole source rows
        for piece in checkpoint.pieces(m.source, max(1, batch // row_bytes) * row_bytes):
            part = piece.reshape(-1, cols)
            if block is None:
                block = np.empty((j1 - j0, rows), part.dtype)
            block[:, r0:r0 + len(part)] = part[:, j0:j1].T
            r0 += len(part)
        yield block


def _verify(folder: str, written: dict[str, list], batch: int) -> None:
    """Read every file back: its header as planned, its size, each tensor's checksum."""
    from ..formats.crc import crc32c
    from ..formats.safetensors import read_header

    for name, entries in written.items():
        path = os.path.join(folder, name)
        header, start = read_header(path)
        offset = 0
        with open(path, "rb") as f:
            for target, dtype, shape, nbytes, crc in entries:
                got = header.get(target, {})
                if (got.get("dtype"), got.get("shape"), got.get("data_offsets")) != (
                        DTYPES[dtype], shape, [offset, offset + nbytes]):
                    raise OutputError(f"'{path}': the header of '{target}' is not as written")
                f.seek(start + offset)
                check, left = 0, nbytes
                while left:
                    chunk = f.read(min(batch, left))
                    if not chunk:
                        break
                    check = crc32c(chunk, check)
                    left -= len(chunk)
                if left or check != crc:
                    raise OutputError(f"'{path}': '{target}' reads back differently from what "
                                      "was written (disk or file system fault); nothing was "
                                      "replaced")
                offset += nbytes
        if os.path.getsize(path) != start + offset:
            raise OutputError(f"'{path}' is {os.path.getsize(path):,} bytes, not "
                              f"{start + offset:,}")
