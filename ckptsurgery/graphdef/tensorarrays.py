"""TF1 ``TensorArrayV3`` ops rewritten as TF2's ``TensorList`` ops, at the protobuf level.

A TF1 ``dynamic_rnn`` (and ``tf.map_fn``, ``tf.scan``) keeps its steps in a TensorArray: a
resource handle plus a float "flow" tensor that threads the order of writes through the while
loop. TFLite converts none of those ops (they need the Flex delegate, which its Python
interpreter does not have), but it lowers ``TensorList`` ops, the form TF2 gives the same
arrays. The rewrite is one to one: the flow becomes the list (a ``variant``), every write,
scatter, read, gather and size takes the list instead of handle + flow, and the loop ops the
flow passes through (``Enter``, ``Merge``, ``Switch``, ``NextIteration``, ``Exit``,
``Identity``) carry a ``variant``. ``unstack()`` into a new array becomes
``TensorListFromTensor``, ``stack()`` ``TensorListStack`` (the two TFLite lowers with dynamic
shapes). The old array ops are left with no reader (a prune drops them).
"""

from __future__ import annotations

from ..errors import UserError
from .metagraph import node_map, op_name

__all__ = ["has_tensor_arrays", "tensor_arrays_as_lists"]

_DT_INT32, _DT_VARIANT = 3, 21
_PASS_THROUGH = frozenset({"Enter", "Merge", "Switch", "NextIteration", "Exit", "Identity"})
_HANDLE_PASS = frozenset({"Enter", "Identity", "Switch", "Merge"})
# TensorArray op -> (TensorList op, positions of its inputs among the old op's, dtype attr).
_REWRITES = {
    "TensorArrayWriteV3": ("TensorListSetItem", (3, 1, 2), "T"),
    "TensorArrayReadV3": ("TensorListGetItem", (2, 1, "shape"), "dtype"),
    "TensorArrayScatterV3": ("TensorListScatterIntoExistingList", (3, 2, 1), "T"),
    "TensorArrayGatherV3": ("TensorListGather", (2, 1, "shape"), "dtype"),
    "TensorArraySizeV3": ("TensorListLength", (1,), None),
}


def has_tensor_arrays(meta) -> bool:
    """Whether the graph holds a ``TensorArrayV3``."""
    return any(n.op == "TensorArrayV3" for n in meta.graph_def.node)


def tensor_arrays_as_lists(meta):
    """A copy of ``meta`` in which every TensorArray is a TensorList (see the module's doc).

    Raises:
        UserError: an array op with no TensorList form (``TensorArrayConcatV3``,
            ``TensorArraySplitV3``...) reads a rewritten array; the message names it.
    """
    new = type(meta)()
    new.CopyFrom(meta)
    nodes = node_map(new)
    arrays = [n for n in new.graph_def.node if n.op == "TensorArrayV3"]
    if not arrays:
        return new
    lists = {}  # array name -> its list's name
    for array in arrays:
        name = f"{array.name}/TensorList"
        shape = _shape_const(new, f"{name}/element_shape", array.attr["element_shape"].shape,
                             control=op_name(array.input[0]))
        reserve = new.graph_def.node.add()
        reserve.name, reserve.op = name, "TensorListReserve"
        reserve.input.extend([shape, array.input[0]])
        reserve.attr["element_dtype"].type = array.attr["dtype"].type
        reserve.attr["shape_type"].type = _DT_INT32
        lists[array.name] = name
    flow_of = {f"{a}:1": lists[a] for a in lists}
    changed = []
    for node in list(new.graph_def.node):
        for i, ref in enumerate(node.input):
            if ref in flow_of:
                node.input[i] = flow_of[ref]
        if not node.op.startswith("TensorArray") or node.op == "TensorArrayV3":
            continue
        array = _array_of(nodes, node.input[0])
        if array is None or array.name not in lists:
            continue
        if node.op not in _REWRITES:
            raise UserError(f"op '{node.name}' ({node.op}) reads TensorArray '{array.name}' and "
                            "has no TensorList form; TFLite cannot convert this graph")
        op, order, dtype_attr = _REWRITES[node.op]
        old = list(node.input)
        data = [r for r in old if not r.startswith("^")]
        controls = [r for r in old if r.startswith("^")]
        whole = _is_range(nodes, data[1])
        if node.op == "TensorArrayScatterV3" and whole and data[3] == lists[array.name]:
            op, order = "TensorListFromTensor", (2, "shape")  # unstack() into a new array
        elif node.op == "TensorArrayGatherV3" and whole:
            op, order = "TensorListStack", (2, "shape")  # stack()
        dtype = node.attr[dtype_attr].type if dtype_attr else None
        inputs = []
        for pos in order:
            if pos == "shape":
                inputs.append(_shape_const(new, f"{node.name}/element_shape",
                                           array.attr["element_shape"].shape,
                                           control=op_name(data[1])))
                if op == "TensorListFromTensor":
                    node.attr["shape_type"].type = _DT_INT32
            else:
                inputs.append(data[pos])
        node.op = op
        del node.input[:]
        node.input.extend(inputs + controls)
        for key in [k for k in node.attr if k != "shape_type"]:
            del node.attr[key]
        if dtype is not None:
            node.attr["element_dtype"].type = dtype
        changed.append(node.name)
    _retype_flows(new, list(lists.values()) + changed)
    return new


def _is_range(nodes, ref: str) -> bool:
    """Whether ``ref`` is a ``Range`` (every index of the array: ``stack()``, ``unstack()``)."""
    node = nodes.get(op_name(ref))
    while node is not None and node.op in _HANDLE_PASS:
        node = nodes.get(op_name(node.input[0]))
    return node is not None and node.op == "Range"


def _array_of(nodes, ref: str):
    """The ``TensorArrayV3`` whose handle ``ref`` is, through loop and identity ops."""
    node = nodes.get(op_name(ref))
    while node is not None and node.op in _HANDLE_PASS:
        node = nodes.get(op_name(node.input[0]))
    return node if node is not None and node.op == "TensorArrayV3" else None


def _retype_flows(meta, starts: list[str]) -> None:
    """Make the loop ops that carry a list from ``starts`` carry a ``variant``."""
    seen, todo = set(), list(starts)
    current = {}
    for node in meta.graph_def.node:
        for ref in node.input:
            if not ref.startswith("^"):
                current.setdefault(op_name(ref), []).append(node)
    while todo:
        name = todo.pop()
        for reader in current.get(name, ()):
            if reader.op in _PASS_THROUGH and reader.name not in seen:
                seen.add(reader.name)
                reader.attr["T"].type = _DT_VARIANT
                todo.append(reader.name)


def _shape_const(meta, name: str, shape, control: str) -> str:
    """Add an int32 ``Const`` holding ``shape`` (-1 for unknown dimensions, ``-1`` alone for an
    unknown rank), in the frame of ``control``'s op (a control input puts it inside a loop)."""
    node = meta.graph_def.node.add()
    node.name, node.op = name, "Const"
    node.input.append("^" + control)
    node.attr["dtype"].type = _DT_INT32
    tensor = node.attr["value"].tensor
    tensor.dtype = _DT_INT32
    if shape.unknown_rank:
        tensor.int_val.append(-1)
    else:
        tensor.tensor_shape.dim.add().size = len(shape.dim)
        tensor.int_val.extend(d.size if d.size >= 0 else -1 for d in shape.dim)
    return name
