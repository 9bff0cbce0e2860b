"""Converting a TF1 checkpoint's weights to today's formats: npz, Keras HDF5, safetensors, TF2.

The weights are read a bounded batch at a time (:func:`~ckptsurgery.formats.stream.read_batches`) and
written tensor by tensor, except for safetensors: the ``safetensors`` package writes a file from a
dict of arrays, so that conversion holds every converted tensor in memory at once.

What goes in: the model's variables; optimizer slots, optimizer state and step counters only with
``include_slots`` (see :mod:`ckptsurgery.graphdef.slots`). Names are the checkpoint keys without TF2's
``/.ATTRIBUTES/VARIABLE_VALUE`` suffix, then renamed by ``maps`` (``(regex, replacement)``, as in
``rename``). bfloat16 tensors become float32 in npz and HDF5 (numpy has no portable bfloat16).

Layouts:

* ``npz``: one array per variable, named as above (``np.load(path)["hidden1/kernel"]``).
* ``keras-h5``: Keras's HDF5 weights layout: one group per layer, the layer being the variable's
  scope with ``/`` made ``_`` (``dnn/hidden1/weights`` is layer ``dnn_hidden1``); its datasets
  ``kernel:0``, ``bias:0`` (TF1's ``weights``/``W`` are ``kernel``, ``biases``/``b`` are
  ``bias``), listed in the ``weight_names`` attribute in Keras's order (kernel, recurrent kernel,
  bias, gamma, beta, moving mean, moving variance). ``layer_names`` lists the layers in the
  order the graph computes them (:func:`~ckptsurgery.graphdef.layergroups.layer_groups`: a
  dense layer, then the batch norm that normalises it), so ``model.load_weights(path)`` loads
  it into a Keras model built in that order; ``by_name=True`` into one with the same layer
  names. Without a ``.meta``, layers are in natural name order.
* ``safetensors``: one tensor per variable (bfloat16 as float32: ``safetensors.numpy`` has no
  bfloat16); with ``torch_layout`` PyTorch's conventions: ``.``
  separators, ``weight``/``bias`` (and ``running_mean``/``running_var`` for batch norm), dense
  kernels transposed to ``[out, in]`` and convolution kernels to ``[out, in, h, w]``.
* ``tf2``: an object-based checkpoint (``tf.train.Checkpoint``): each ``/``-separated part of a
  name is an object attribute, the last one a variable, and the root has a ``save_counter``, so
  ``hidden1/kernel`` restores into ``tf.train.Checkpoint(hidden1=m)`` where ``m.kernel`` is a
  ``tf.Variable`` of the right shape (see ``docs/migrate.md``).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import SelectionError, UserError
from ..graphdef.roles import classify
from ..graphdef.slots import clean_name

__all__ = [
    "FORMATS",
    "ConvertResult",
    "plan_names",
    "convert_checkpoint",
    "torch_name",
]

#: Formats :func:`convert_checkpoint` writes; ``hf`` (a Hugging Face transformers folder, named
#: and laid out by the model family's rules) is :func:`ckptsurgery.migrate.hf.convert_to_hf`.
FORMATS = ("npz", "keras-h5", "safetensors", "tf2", "hf")

_TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_KERAS_NAMES = {"weights": "kernel", "W": "kernel", "kernel": "kernel",
                "biases": "bias", "b": "bias", "bias": "bias"}
_KERAS_ORDER = ("kernel", "recurrent_kernel", "bias", "gamma", "beta", "moving_mean",
                "moving_variance")
_TORCH_NAMES = {"kernel": "weight", "weights": "weight", "W": "weight", "bias": "bias",
                "biases": "bias", "b": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var"}
_KERNELS = ("kernel", "weights", "W")


@dataclass
class ConvertResult:
    """What :func:`convert_checkpoint` wrote: ``names`` maps checkpoint keys to names in the
    output, ``skipped`` maps the keys left out to the reason."""

    path: str
    format: str
    names: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)
    bytes_read: int = 0

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.format}): {len(self.names)} tensor(s), "
               f"{self.bytes_read:,} bytes read"]
        out += [f"  {k} -> {n}" for k, n in self.names.items() if k != n]
        if self.skipped:
            reasons: dict[str, int] = {}
            for r in self.skipped.values():
                reasons[r] = reasons.get(r, 0) + 1
            out.append("left out: " + ", ".join(f"{n} {r}" for r, n in reasons.items()))
        return out

    def as_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "names": self.names,
                "skipped": self.skipped, "bytes": self.bytes_read}


def torch_name(name: str) -> str:
    """PyTorch's name for a variable: ``hidden1/kernel`` -> ``hidden1.weight``."""
    scope, _, last = name.rpartition("/")
    last = _TORCH_NAMES.get(last, last)
    return f"{scope.replace('/', '.')}.{last}" if scope else last


def plan_names(checkpoint, *, include_slots: bool = False, only: str | None = None,
               maps: Sequence[tuple[str, str]] = (),
               use_ema: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """Which keys of ``checkpoint`` a conversion writes, and under which names; with
    ``use_ema`` a weight's ``ExponentialMovingAverage`` shadow is written under the weight's
    name, in its place.

    Returns:
        ``(names, skipped)``: ``{key: output name}`` and ``{key: reason left out}``.

    Raises:
        SelectionError: ``only`` matches nothing, nothing is left, or two keys get one name.
    """
    from .rewrite import compile_renames

    keys = list(checkpoint.variables)
    roles = classify(keys, checkpoint.meta_graph)
    pattern = re.compile(only) if only else None
    if pattern is not None and not any(pattern.search(k) for k in keys):
        raise SelectionError(f"--only '{only}' matches no variable of '{checkpoint.prefix}'")
    rename = compile_renames(maps)
    names, skipped = {}, {}
    for k in keys:
        kind = roles[k].kind
        if pattern is not None and not pattern.search(k):
            skipped[k] = "not matched by --only"
        elif kind in ("slot", "optimizer", "step") and not include_slots:
            skipped[k] = {"slot": "optimizer slots", "optimizer": "optimizer state",
                          "step": "step counters"}[kind]
        else:
            names[k] = rename(clean_name(k))
    if use_ema:
        shadows = {k: r.primary for k, r in roles.items() if r.kind == "ema" and r.primary in names}
        if not shadows:
            raise SelectionError(f"--use-ema: '{checkpoint.prefix}' has no "
                                 "ExponentialMovingAverage shadows of the weights converted")
        for shadow, weight in shadows.items():
            if shadow in names:
                names[shadow] = names.pop(weight)
                skipped[weight] = "replaced by their moving averages (--use-ema)"
    if not names:
        raise SelectionError(f"no variable of '{checkpoint.prefix}' is left to convert; "
                             "pass --include-slots or loosen --only")
    seen: dict[str, str] = {}
    for k, n in names.items():
        if n in seen:
            raise SelectionError(f"'{seen[n]}' and '{k}' would both be written as '{n}'; "
                                 "use --map to tell them apart")
        seen[n] = k
    return names, skipped


def convert_checkpoint(path: str, to: str, out: str, *, include_slots: bool = False,
                       only: str | None = None, maps: Sequence[tuple[str, str]] = (),
                       torch_layout: bool = False, force: bool = False, progress: bool = True,
                       max_batch_bytes: int | None = None, use_ema: bool = False) -> ConvertResult:
    """Convert the checkpoint at ``path`` to format ``to`` (one of :data:`FORMATS`) at ``out``.

    Args:
        path: checkpoint prefix, file or folder.
        to: ``npz``, ``keras-h5``, ``safetensors``, ``tf2`` or ``hf`` (with the family's
            rules' defaults; :func:`~ckptsurgery.migrate.hf.convert_to_hf` takes its options).
        out: output file (a prefix for ``tf2``).
        include_slots: also write optimizer slots, optimizer state and step counters.
        only: regex (``re.search``) of the keys to convert.
        maps: ``(regex, replacement)`` renames applied to the names.
        torch_layout: PyTorch names and layouts (``safetensors`` and ``npz``).
        use_ema: write each weight's moving average in its place.
        force: replace an existing output.
        progress: progress bar on stderr (when it is a terminal).
        max_batch_bytes: bound of one read batch.

    Raises:
        UserError: unknown format, or an option the format does not take.
        SelectionError: see :func:`plan_names`.
        OutputError: the output exists (no ``force``) or is an input.
    """
    from ..formats.checkpoint import open_checkpoint
    from ..formats.stream import DEFAULT_BATCH_BYTES

    if to not in FORMATS:
        raise UserError(f"unknown format '{to}'; choose one of {', '.join(FORMATS)}")
    if to == "hf":
        if include_slots or only or maps or torch_layout or use_ema:
            raise UserError("--include-slots, --only, --map, --torch-layout and --use-ema do not "
                            "apply to --to hf: the family's rules decide names and layouts")
        from .hf import convert_to_hf

        return convert_to_hf(path, out, force=force, progress=progress,
                             max_batch_bytes=max_batch_bytes)
    if torch_layout and to not in ("safetensors", "npz"):
        raise UserError("--torch-layout applies to safetensors and npz only")
    checkpoint = open_checkpoint(path)
    names, skipped = plan_names(checkpoint, include_slots=include_slots, only=only, maps=maps,
                                use_ema=use_ema)
    if torch_layout:
        names = {k: torch_name(n) for k, n in names.items()}
    batch = max_batch_bytes or DEFAULT_BATCH_BYTES
    writer = {"npz": _write_npz, "keras-h5": _write_keras_h5,
              "safetensors": _write_safetensors, "tf2": _write_tf2}[to]
    result = ConvertResult(out, to, names, skipped)
    result.path, result.bytes_read = writer(checkpoint, names, out, force=force,
                                            progress=progress, batch=batch,
                                            torch_layout=torch_layout)
    return result


def _arrays(checkpoint, names: dict[str, str], *, progress: bool, batch: int,
            torch_layout: bool):
    """Yield ``(key, output name, numpy array)``, a bounded batch read at a time."""
    import numpy as np

    from ..formats.stream import progress_bar, read_batches

    total = sum(checkpoint.variables[k].nbytes for k in names)
    with progress_bar(total, "converting", progress) as bar:
        for chunk in read_batches(checkpoint, list(names), max_batch_bytes=batch):
            for key, tensor in chunk:
                array = np.asarray(tensor)
                if array.dtype.name == "bfloat16":
                    array = array.astype(np.float32)
                elif array.dtype == object:
                    array = array.astype(np.bytes_)
                if torch_layout:
                    array = _torch_layout(key, array)
                yield key, names[key], array
                bar.update(checkpoint.variables[key].nbytes)


def _torch_layout(key: str, array):
    """Dense kernels ``[in, out]`` to ``[out, in]``; convolution kernels (TF's
    ``[..., in, out]``) to ``[out, in, ...]``."""
    import numpy as np

    if not _transposed(key, array.ndim):
        return array
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    spatial = tuple(range(array.ndim - 2))
    return np.ascontiguousarray(array.transpose((array.ndim - 1, array.ndim - 2) + spatial))


def _total(checkpoint, names) -> int:
    return sum(checkpoint.variables[k].nbytes for k in names)


def _write_npz(checkpoint, names, out, *, force, progress, batch, torch_layout):
    import numpy as np

    from ..formats.output import atomic_file, check_output_file

    out = check_output_file(out, inputs=checkpoint.files.paths, force=force)
    with atomic_file(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                  allowZip64=True) as zf:
        for _, name, array in _arrays(checkpoint, names, progress=progress, batch=batch,
                                      torch_layout=torch_layout):
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
    return out, _total(checkpoint, names)


def _keras_layout(names: dict[str, str], meta=None) -> dict[str, list[tuple[str, str]]]:
    """``{layer: [(key, weight name), ...]}`` in Keras's weight order, the layers in the order
    ``meta``'s graph computes them (natural name order without one, and for the rest)."""
    layers: dict[str, list[tuple[str, str]]] = {}
    for key, name in names.items():
        scope, _, last = name.rpartition("/")
        layer = (scope or name).replace("/", "_")
        layers.setdefault(layer, []).append((key, _KERAS_NAMES.get(last, last)))
    for layer, weights in layers.items():
        taken = [w for _, w in weights]
        if len(set(taken)) != len(taken):
            raise SelectionError(f"layer '{layer}' would hold two weights named "
                                 f"{sorted({w for w in taken if taken.count(w) > 1})}; "
                                 "use --map to rename one")
        weights.sort(key=lambda kw: (_KERAS_ORDER.index(kw[1]) if kw[1] in _KERAS_ORDER
                                     else len(_KERAS_ORDER), kw[1]))
    rank = _graph_order(meta) if meta is not None else {}
    last = (len(rank), 0)

    def order(item):
        return (min((rank.get(key, last) for key, _ in item[1]), default=last),
                _natural(item[0]))

    return dict(sorted(layers.items(), key=order))


def _graph_order(meta) -> dict[str, tuple[int, int]]:
    """``{variable: (its layer's index, its index in the layer)}`` in the order the graph
    computes its layers; a partitioned variable's pieces count as its key."""
    from ..graphdef.layergroups import layer_groups

    rank: dict[str, tuple[int, int]] = {}
    for i, layer in enumerate(layer_groups(meta)):
        for j, name in enumerate(layer.variables):
            rank.setdefault(re.sub(r"/part_\d+$", "", name), (i, j))
    return rank


def _write_keras_h5(checkpoint, names, out, *, force, progress, batch, torch_layout):
    import h5py

    from ..formats.output import atomic_file, check_output_file

    layers = _keras_layout(names, checkpoint.meta_graph)
    where = {key: (layer, weight) for layer, ws in layers.items() for key, weight in ws}
    out = check_output_file(out, inputs=checkpoint.files.paths, force=force)
    with atomic_file(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = [layer.encode() for layer in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for layer, weights in layers.items():
            f.create_group(layer).attrs["weight_names"] = [
                f"{layer}/{w}:0".encode() for _, w in weights]
        for key, _, array in _arrays(checkpoint, names, progress=progress, batch=batch,
                                     torch_layout=False):
            layer, weight = where[key]
            f[layer].create_dataset(f"{layer}/{weight}:0", data=array)
    return out, _total(checkpoint, names)


def _write_safetensors(checkpoint, names, out, *, force, progress, batch, torch_layout):
    """Stream the tensors into a safetensors file: the header (every name, dtype, shape and
    byte range) is known from the checkpoint's index, so it is written first and each tensor's
    bytes follow piece by piece. Kernels in PyTorch's layout are transposed whole, one at a
    time."""
    from ..formats.output import atomic_file, check_output_file
    from ..formats.safetensors import DTYPES, header_bytes
    from ..formats.stream import progress_bar

    out = check_output_file(out, inputs=checkpoint.files.paths, force=force)
    layout = []
    for key, name in sorted(names.items(), key=lambda kv: kv[1]):
        info = checkpoint.variables[key]
        dtype = "float32" if info.dtype == "bfloat16" else info.dtype
        if dtype not in DTYPES:
            raise UserError(f"'{key}' is {info.dtype}, which safetensors cannot store; leave "
                            "it out with --only")
        shape = list(info.shape)
        if torch_layout and _transposed(key, len(shape)):
            shape = [shape[-1], shape[-2], *shape[:-2]]
        layout.append((key, name, dtype, shape,
                       info.nbytes * (2 if info.dtype == "bfloat16" else 1)))
    header = header_bytes([entry[1:] for entry in layout],
                          {"format": "pt" if torch_layout else "np",
                           "source": os.path.basename(checkpoint.prefix)})
    with progress_bar(_total(checkpoint, names), "converting", progress) as bar, \
            atomic_file(out) as tmp, open(tmp, "wb") as f:
        f.write(header)
        for key, _, dtype, _, _ in layout:
            for piece in _pieces(checkpoint, key, batch, torch_layout):
                f.write(piece.astype(dtype, copy=False).tobytes())
                bar.update(piece.nbytes)
    return out, _total(checkpoint, names)


def _transposed(key: str, rank: int) -> bool:
    """Whether PyTorch's layout transposes this tensor (see :func:`_torch_layout`)."""
    return rank >= 2 and clean_name(key).rpartition("/")[2] in _KERNELS


def _pieces(checkpoint, key: str, batch: int, torch_layout: bool):
    """A tensor's values in C order, in bounded pieces unless it must be transposed whole."""
    if torch_layout and _transposed(key, len(checkpoint.variables[key].shape)):
        yield _torch_layout(key, checkpoint.read(key)).reshape(-1)
    else:
        yield from checkpoint.pieces(key, batch)


def _write_tf2(checkpoint, names, out, *, force, progress, batch, torch_layout):
    import numpy as np

    from ..formats.output import check_output_prefix
    from ..formats.stream import CopySpec, copy_tensors
    from ..safety.staging import staged_checkpoint

    graph = _object_graph(names)
    prefix = check_output_prefix(out, inputs=checkpoint.files.paths, force=force)
    specs = [CopySpec(k, n + _TF2_SUFFIX) for k, n in names.items()]
    extra = [("_CHECKPOINTABLE_OBJECT_GRAPH", np.array(graph.SerializeToString(), dtype=object))]
    if "save_counter" not in names.values():
        extra.append(("save_counter" + _TF2_SUFFIX, np.array(1, dtype=np.int64)))
    read_back: dict = {}  # what the writing reads back as it goes, not read again
    with staged_checkpoint(prefix, read_back=read_back) as tmp:
        stats = copy_tensors(checkpoint, tmp, specs, progress=progress, extra=extra,
                             max_batch_bytes=batch, fsync=False,  # the staging fsyncs
                             read_back=read_back)
    return prefix, stats.bytes_read


def _object_graph(names: dict[str, str]):
    """The ``TrackableObjectGraph`` of nested objects whose attributes are the name parts."""
    from ..formats.protos import message_class

    graph = message_class("tensorflow.TrackableObjectGraph")()
    graph.nodes.add()
    index: dict[tuple[str, ...], int] = {(): 0}
    leaves = [(key, name) for key, name in names.items()]
    if "save_counter" not in names.values():
        leaves.append(("save_counter", "save_counter"))
    for key, name in leaves:
        parts = tuple(name.split("/"))
        if not all(parts):
            raise SelectionError(f"'{name}' has an empty name part; use --map to fix it")
        for i in range(1, len(parts) + 1):
            if parts[:i] not in index:
                index[parts[:i]] = len(graph.nodes)
                graph.nodes.add()
                child = graph.nodes[index[parts[:i - 1]]].children.add()
                child.node_id = index[parts[:i]]
                child.local_name = parts[i - 1]
        attr = graph.nodes[index[parts]].attributes.add()
        attr.name = "VARIABLE_VALUE"
        attr.full_name = clean_name(key)
        attr.checkpoint_key = name + _TF2_SUFFIX
    return graph


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
