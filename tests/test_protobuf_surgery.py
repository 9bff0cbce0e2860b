"""Direct tests of the protobuf-level code under every migration verb: reading a ``.meta``'s
saver (``graphdef.saver``), rewriting a ``.meta`` (``graphdef.metarewrite``) and streaming
tensors into a new bundle (``formats.stream``), on the ``mixed`` fixture (ref, resource and
partitioned variables, Adam's slots, a TF1 cond context), so that they run without ../shared.

Every output is checked with plain TensorFlow: ``import_meta_graph`` + the saver it builds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FIXTURE_MIXED, read_vars
from migrate_helpers import restore_values

from ckptsurgery.errors import SelectionError
from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.formats.metafile import read_meta_graph, write_meta_graph
from ckptsurgery.formats.stream import CopySpec, copy_tensors, plan_batches, read_batches
from ckptsurgery.formats.writer import BundleFileWriter
from ckptsurgery.graphdef.collections import collection_items
from ckptsurgery.graphdef.metarewrite import rewrite_meta_graph
from ckptsurgery.graphdef.saver import (
    remove_saver,
    replace_saver,
    saved_variables,
    saver_nodes,
    saver_tensors,
)

SLOTS = ("/Adam", "/Adam_1")
POWERS = ("beta1_power", "beta2_power")


@pytest.fixture(scope="module")
def meta():
    return read_meta_graph(FIXTURE_MIXED + ".meta")


@pytest.fixture(scope="module")
def values() -> dict:
    return read_vars(FIXTURE_MIXED)


def _copy_bundle(prefix: str, keys, rename=lambda k: k) -> None:
    """Copy ``keys`` of the fixture to a new bundle at ``prefix`` with ckptsurgery's streaming."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    copy_tensors(open_checkpoint(FIXTURE_MIXED), prefix,
                 [CopySpec(k, rename(k)) for k in keys], max_batch_bytes=64, progress=False)


# graphdef.saver ---------------------------------------------------------------------------------

def test_saved_variables_lists_every_key_with_its_node_and_kind(meta, values):
    saved = saved_variables(meta)
    by_key: dict[str, list] = {}
    for v in saved:
        by_key.setdefault(v.key, []).append(v)
    assert sorted(by_key) == sorted(values)
    assert [v.resource for v in by_key["res/w"]] == [True]
    assert by_key["dense/kernel"][0].resource is False
    # the partitioned variable: two slices of one key, each restoring its own node
    parts = sorted(by_key["part/w"], key=lambda v: v.slice_spec)
    assert [v.node for v in parts] == ["part/w/part_0", "part/w/part_1"]
    assert [v.slice_spec for v in parts] == ["6 5 0,3:0,5", "6 5 3,3:0,5"]
    assert by_key["part/w/Adam"][0].node.startswith("part/w/part_")


def test_replace_saver_builds_a_saver_plain_tensorflow_restores_with(meta, values, tmp_path):
    new = type(meta)()
    new.CopyFrom(meta)
    old_nodes = saver_nodes(new)
    saved = saved_variables(new)
    assert remove_saver(new) == old_nodes
    assert not any(n.name in old_nodes for n in new.graph_def.node)
    scope = replace_saver(new, saved)
    prefix = str(tmp_path / "m" / "model.ckpt")
    _copy_bundle(prefix, values)
    write_meta_graph(new, prefix + ".meta")
    restored = restore_values(prefix)
    assert scope == new.saver_def.restore_op_name.rpartition("/")[0]
    for key, value in values.items():
        assert restored[key].tobytes() == value.tobytes(), key


# graphdef.metarewrite ---------------------------------------------------------------------------

def test_dropping_slots_keeps_the_cond_context_and_restores(meta, values, tmp_path):
    drop = {k for k in values if k.endswith(SLOTS) or k in POWERS}
    targets = {k: (None if k in drop else k) for k in values}
    new, info = rewrite_meta_graph(meta, targets)
    assert sorted(info.removed_variables) == sorted(
        {v.node for v in saved_variables(meta) if v.key in drop})
    kept = {n.name: n.op for n in new.graph_def.node}
    assert not any(op.endswith("ApplyAdam") for op in kept.values())
    assert not any(name.endswith(SLOTS) or name.startswith(POWERS) for name in kept)
    assert "cond_context" in new.collection_def  # the dropout switch survives
    assert "train_op" not in new.collection_def
    prefix = str(tmp_path / "s" / "model.ckpt")
    _copy_bundle(prefix, [k for k in values if k not in drop])
    write_meta_graph(new, prefix + ".meta")
    restored = restore_values(prefix)
    assert sorted(restored) == sorted(set(values) - drop)
    for key, value in restored.items():
        assert value.tobytes() == values[key].tobytes(), key


def test_renaming_a_scope_renames_its_nodes_contexts_and_partitions(meta, values, tmp_path):
    def rename(name: str) -> str:
        return "fc/" + name[len("dense/"):] if name.startswith("dense/") else \
            name.replace("part/w", "split/w", 1)

    targets = {k: rename(k) for k in values}
    new, info = rewrite_meta_graph(meta, targets, rename=rename)
    names = {n.name for n in new.graph_def.node}
    assert {"fc/kernel", "fc/kernel/read", "fc/bias", "split/w/part_0"} <= names
    assert not any(n.startswith("dense/") for n in names)
    # (the partitioned variable's concatenation, ``part/w``, is no variable's node: it keeps its name)
    assert not any(n.startswith("part/w/part_") for n in names)
    assert info.renamed_ops["dense/kernel"] == "fc/kernel"
    prefix = str(tmp_path / "r" / "model.ckpt")
    _copy_bundle(prefix, values, rename)
    write_meta_graph(new, prefix + ".meta")
    restored = restore_values(prefix)
    for key, value in values.items():
        assert restored[rename(key)].tobytes() == value.tobytes(), key


def test_a_rename_onto_an_existing_op_is_refused(meta, values):
    def rename(name: str) -> str:
        return "res/w" if name == "dense/bias" else name

    with pytest.raises(SelectionError, match="collides with op"):
        rewrite_meta_graph(meta, {k: rename(k) for k in values}, rename=rename)


def test_a_stored_dtype_gets_a_cast_in_the_new_saver(meta, values, tmp_path):
    from tensorflow.core.framework import types_pb2

    targets = {k: k for k in values}
    new, _ = rewrite_meta_graph(meta, targets, stored_dtypes={"dense/kernel": types_pb2.DT_HALF})
    casts = [n for n in new.graph_def.node if n.op == "Cast" and "dense/kernel" in "".join(n.input)]
    assert casts, "no Cast between the float16 key and the float32 variable"
    prefix = str(tmp_path / "c" / "model.ckpt")
    os.makedirs(os.path.dirname(prefix))
    copy_tensors(open_checkpoint(FIXTURE_MIXED), prefix,
                 [CopySpec(k, k, "float16" if k == "dense/kernel" else None) for k in values],
                 progress=False)
    write_meta_graph(new, prefix + ".meta")
    restored = restore_values(prefix)
    expected = values["dense/kernel"].astype(np.float16).astype(np.float32)
    assert restored["dense/kernel"].tobytes() == expected.tobytes()
    assert restored["res/w"].tobytes() == values["res/w"].tobytes()


# formats.stream ---------------------------------------------------------------------------------

def test_plan_batches_bounds_each_batch_and_keeps_order():
    sizes = [("a", 40), ("b", 40), ("c", 100), ("d", 10), ("e", 10)]
    assert plan_batches(sizes, 64) == [["a"], ["b"], ["c"], ["d", "e"]]
    assert plan_batches(sizes, 1000) == [["a", "b", "c", "d", "e"]]


def test_read_batches_returns_every_tensor_in_bounded_batches(values):
    ckpt = open_checkpoint(FIXTURE_MIXED)
    batches = list(read_batches(ckpt, sorted(values), max_batch_bytes=100))
    assert [k for b in batches for k, _ in b] == sorted(values)
    assert len(batches) > 3
    for batch in batches:
        for key, tensor in batch:
            assert np.asarray(tensor).tobytes() == values[key].tobytes(), key


def test_bundle_writer_writes_one_shard_tensorflow_reads(tmp_path, values):
    prefix = str(tmp_path / "w" / "model.ckpt")
    os.makedirs(os.path.dirname(prefix))
    with BundleFileWriter(prefix) as writer:
        for key, value in sorted(values.items()):
            writer.add(key, value)
    assert sorted(os.listdir(os.path.dirname(prefix))) == [
        "model.ckpt.data-00000-of-00001", "model.ckpt.index"], "one data file, as Saver writes"
    written = read_vars(prefix)
    assert sorted(written) == sorted(values)
    for key, value in values.items():
        assert written[key].tobytes() == value.tobytes(), key


def test_a_failed_bundle_leaves_no_files(tmp_path):
    prefix = str(tmp_path / "f" / "model.ckpt")
    os.makedirs(os.path.dirname(prefix))
    with pytest.raises(RuntimeError), BundleFileWriter(prefix) as writer:
        writer.add("a", np.ones(3, np.float32))
        raise RuntimeError("interrupted")
    assert os.listdir(os.path.dirname(prefix)) == []


def test_copy_tensors_renames_casts_and_counts_overflow(tmp_path):
    prefix = str(tmp_path / "o" / "model.ckpt")
    os.makedirs(os.path.dirname(prefix))
    ckpt = open_checkpoint(FIXTURE_MIXED)
    big = np.full((2, 2), 1e6, np.float32)
    from migrate_helpers import write_checkpoint

    src = write_checkpoint(str(tmp_path / "big" / "m"), {"big": big, "small": np.ones(2, np.float32)})
    stats = copy_tensors(open_checkpoint(src), prefix,
                         [CopySpec("big", "huge", "float16"), CopySpec("small", "one", "float16")],
                         progress=False)
    assert stats.overflowed == {"huge": 4}
    out = read_vars(prefix)
    assert out["one"].dtype == np.float16 and np.all(np.isinf(out["huge"]))
    assert stats.bytes_read == big.nbytes + 8
    assert ckpt.variables  # the fixture itself is untouched by the copies above


def test_the_fixture_has_the_kinds_these_tests_rely_on(meta):
    assert collection_items(meta, "cond_context") == [  # the true and the false branch
        f"<{len(raw)} bytes>" for raw in meta.collection_def["cond_context"].bytes_list.value]
    assert len(collection_items(meta, "cond_context")) == 2
    ops = {n.op for n in meta.graph_def.node}
    assert {"VarHandleOp", "VariableV2", "ApplyAdam", "ResourceApplyAdam", "Switch", "Merge"} <= ops


# graphdef.metagraph: the node index and the memo -------------------------------------------------

def test_node_map_and_index_read_as_the_nodes_do(meta):
    from ckptsurgery.graphdef.metagraph import node_index, node_map, nodes_of_type

    nodes = node_map(meta)
    plain = {n.name: n for n in meta.graph_def.node}
    assert list(nodes) == list(plain) and len(nodes) == len(plain)
    assert all(nodes[name] == node and name in nodes for name, node in plain.items())
    assert [name for name, _ in nodes.items()] == list(plain)
    assert nodes.get("no/such/op") is None and "no/such/op" not in nodes
    index = node_index(meta)
    assert index.ops == [n.op for n in meta.graph_def.node]
    assert index.devices == [n.device for n in meta.graph_def.node]
    adam = nodes_of_type(meta, "ApplyAdam", "ResourceApplyAdam")
    assert [n.name for n in adam] == [n.name for n in meta.graph_def.node
                                      if n.op in ("ApplyAdam", "ResourceApplyAdam")]
    assert len(adam) >= 2


def test_consumers_follow_data_edges_only(meta):
    from ckptsurgery.graphdef.metagraph import op_name
    from ckptsurgery.graphdef.walk import consumers

    data, control = {}, 0
    for node in meta.graph_def.node:
        for ref in node.input:
            if ref.startswith("^"):
                control += 1
            else:
                data.setdefault(op_name(ref), []).append(node.name)
    assert consumers(meta) == data
    assert control  # the fixture has control edges, which consumers leaves out


def test_thaw_ends_the_memo_inside_a_frozen_block(meta):
    from ckptsurgery.graphdef.metagraph import frozen, node_index, thaw

    with frozen(meta):
        first = node_index(meta)
        assert node_index(meta) is first
        thaw(meta)
        assert node_index(meta) is not first  # computed again from the graph as it is
    assert node_index(meta) is not node_index(meta)  # outside a block, nothing is kept


@pytest.mark.parametrize("few_runs", [64, 0], ids=["slices", "sort"])
@pytest.mark.parametrize("work", ["strip", "rename", "cast"])
def test_an_in_place_rewrite_writes_the_graph_a_copy_would(meta, values, work, few_runs,
                                                           monkeypatch):
    """``in_place`` (what a rewrite of a checkpoint's own graph uses) gives, byte for byte, the
    graph the copying rewrite gives, whether removed nodes go as slices or by the sort."""
    import ckptsurgery.graphdef.metarewrite as metarewrite
    from ckptsurgery.formats.dtypes import enum_of

    monkeypatch.setattr(metarewrite, "_FEW_RUNS", few_runs)
    keys = list(values)
    options = {}
    if work == "strip":
        targets = {k: None if k.endswith(SLOTS) or k in POWERS else k for k in keys}
    elif work == "rename":
        targets = {k: k.replace("dense", "fc") for k in keys}
        options["rename"] = lambda name: name.replace("dense", "fc")
    else:
        targets = {k: k for k in keys}
        options["stored_dtypes"] = {k: enum_of("float16") for k in keys
                                    if values[k].dtype == np.float32}
    copied, info = rewrite_meta_graph(meta, targets, **options)
    own = type(meta).FromString(meta.SerializeToString())
    rewritten, info_in_place = rewrite_meta_graph(own, targets, in_place=True, **options)
    assert rewritten is own
    assert rewritten.SerializeToString(deterministic=True) == copied.SerializeToString(
        deterministic=True)
    assert info_in_place == info
    # what the new saver restores, read with the index the rewrite derived, is what a fresh
    # parse and trace of the written graph gives
    assert info.restored == saver_tensors(type(meta).FromString(copied.SerializeToString()))
    assert {"strip": info.removed_ops, "rename": info.renamed_ops,
            "cast": [n for n in copied.graph_def.node if n.op == "Cast"]}[work]


def test_what_goes_with_dropped_variables_does_not_depend_on_node_order(meta, values):
    """The dependents of dropped variables are found in passes over the nodes in graph order;
    with the nodes reversed (every input read before it is seen: back edges everywhere) the
    same nodes go, and the same control inputs are cut."""
    targets = {k: None if k.endswith(SLOTS) or k in POWERS else k for k in values}
    _, info = rewrite_meta_graph(meta, targets)
    reordered = type(meta).FromString(meta.SerializeToString())
    nodes = list(reordered.graph_def.node)[::-1]
    del reordered.graph_def.node[:]
    reordered.graph_def.node.extend(nodes)
    new, info_reordered = rewrite_meta_graph(reordered, targets)
    assert info.removed_ops and info_reordered.removed_ops == info.removed_ops
    assert info_reordered.removed_variables == info.removed_variables
    kept = {n.name: list(n.input) for n in rewrite_meta_graph(meta, targets)[0].graph_def.node}
    assert {n.name: list(n.input) for n in new.graph_def.node} == kept


def test_an_index_after_removals_renames_and_additions_is_the_graphs(meta):
    """NodeIndex.after, which a rewrite uses instead of a new pass over the nodes, gives the
    index a pass over the edited graph gives."""
    from ckptsurgery.graphdef.metagraph import NodeIndex

    index = NodeIndex(meta.graph_def)
    nodes = meta.graph_def.node
    gone = {n.name for n in nodes if "Adam" in n.name}
    renames = {n.name: n.name.replace("dense", "fc") for n in nodes
               if n.name.startswith("dense") and n.name not in gone}
    kept = [n for n in nodes if n.name not in gone]
    assert gone and renames and kept
    del nodes[:]
    nodes.extend(kept)
    for node in nodes:
        node.name = renames.get(node.name, node.name)
    start = len(nodes)
    added = nodes.add(name="extra/Const", op="Const", device="/cpu:0")
    after = index.after(gone, renames)
    after.extend(nodes[start:])
    fresh = NodeIndex(meta.graph_def)
    assert (after.names, after.ops, after.devices) == (fresh.names, fresh.ops, fresh.devices)
    assert after.position == fresh.position and after.names[-1] == added.name


def test_a_rewrite_hands_the_inputs_graph_over_and_leaves_its_files(tmp_path):
    """plan_and_rewrite rewrites the input's parsed graph in place (no copy); the input's files
    stay byte for byte, and the checkpoint parses its .meta again when asked."""
    import hashlib
    import shutil

    from ckptsurgery.migrate.rewrite import plan_and_rewrite, plan_strip

    src = str(tmp_path / "in")
    shutil.copytree(os.path.dirname(FIXTURE_MIXED), src)
    prefix = os.path.join(src, os.path.basename(FIXTURE_MIXED))
    ckpt = open_checkpoint(prefix)
    digest = {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in ckpt.files.paths}
    before = ckpt.meta_graph
    plan, result = plan_and_rewrite(ckpt, lambda c: plan_strip(c, optimizer_slots=True),
                                    str(tmp_path / "out" / "m"), progress=False)
    assert result is not None and plan.targets["dense/kernel/Adam"] is None
    assert not any(n.name.endswith(SLOTS) for n in before.graph_def.node)  # rewritten in place
    again = ckpt.meta_graph
    assert again is not before
    assert again.SerializeToString() == read_meta_graph(prefix + ".meta").SerializeToString()
    assert any(n.name.endswith(SLOTS) for n in again.graph_def.node)
    assert digest == {p: hashlib.sha256(open(p, "rb").read()).hexdigest()
                      for p in ckpt.files.paths}
    dry, nothing = plan_and_rewrite(ckpt, lambda c: plan_strip(c, optimizer_slots=True), None)
    assert nothing is None and dry.targets == plan.targets


def test_a_saver_the_rewrite_cannot_trace_is_checked_by_parsing_the_written_meta(
        tmp_path, monkeypatch):
    """When the rewritten graph's saver cannot be traced before writing, the read-back falls
    back to parsing the written .meta and tracing it there; the output still verifies."""
    import ckptsurgery.graphdef.metarewrite as metarewrite
    import ckptsurgery.safety.verify as verify
    from ckptsurgery.migrate.rewrite import strip_checkpoint

    def broken(meta):
        raise RuntimeError("cannot trace")

    checked = []
    original = verify.check_written
    monkeypatch.setattr(verify, "check_written",
                        lambda prefix, meta=None, read_back=None: (
                            checked.append(meta), original(prefix, meta, read_back)))
    traced = str(tmp_path / "traced" / "m")
    strip_checkpoint(FIXTURE_MIXED, traced, optimizer_slots=True, progress=False)
    written, = checked  # as it goes normally: the bytes and the saver traced before writing
    assert written.data == open(traced + ".meta", "rb").read()
    assert written.restored == saver_tensors(read_meta_graph(traced + ".meta"))
    checked.clear()
    monkeypatch.setattr(metarewrite, "saver_tensors", broken)
    out = str(tmp_path / "out" / "m")
    result = strip_checkpoint(FIXTURE_MIXED, out, optimizer_slots=True, progress=False)
    assert result.meta.restored is None and checked == [None]
    report = verify.verify_checkpoint(out)
    assert report.ok and report.meta_checked and report.restored_checked > 0


def test_a_rewrite_fsyncs_every_file_after_its_read_back_and_before_the_rename(tmp_path,
                                                                               monkeypatch):
    """The data is not fsynced as it is closed (the disk writes while the read-back checks
    it); every file is, before it is renamed into place."""
    import ckptsurgery.formats.output as output
    from ckptsurgery.migrate.rewrite import cast_checkpoint

    events = []
    real_fsync, real_replace = output._fsync, output.os.replace
    monkeypatch.setattr(output, "_fsync",
                        lambda path: (events.append(("fsync", os.path.basename(path))),
                                      real_fsync(path)))
    monkeypatch.setattr(output.os, "replace",
                        lambda a, b: (events.append(("replace", os.path.basename(a))),
                                      real_replace(a, b)))
    out = str(tmp_path / "o" / "model.ckpt")
    cast_checkpoint(FIXTURE_MIXED, "float16", out, progress=False)
    data = "model.ckpt.data-00000-of-00001"
    for name in (data, "model.ckpt.index", "model.ckpt.meta"):
        assert events.index(("fsync", name)) < events.index(("replace", name)), events
