"""Auditing an untrusted graph: the ops that read or write files, open connections or run code.

A ``.meta`` from a stranger is a program. Running any part of it (variable initialisers, a
training step) runs whatever ops it wired in: ``WriteFile`` to a path of its choice, a
``TFRecordDataset`` over ``/etc``, a ``DebugIdentity`` streaming tensors to a ``grpc://`` URL, a
``PyFunc``. :func:`audit_meta_graph` lists them, starting from ``saved_model_cli scan``'s
denylist (``ReadFile``, ``WriteFile``, ``PrintV2``) and going well beyond it (see
:data:`UNSAFE_OPS`), in the graph and in every function of its library, reading the protobuf only.

The graph's own saver writes and reads checkpoint files by design. Its ``Save``/``Restore`` ops
are accepted when they sit in a saver's name scope, take their file name from that saver's
filename tensor (the one ``saver_def`` or the ``savers`` collection names; for the extra savers
some libraries leave behind, TFLearn's for one, the scope's ``Const``), and nothing outside the
scope depends on them or names them in a collection: then they run only when a tool runs that
saver on purpose, with a path it chose. Any other save/restore op is flagged.

:func:`check_graph_safe` is the gate for commands that run an imported graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UnsafeGraphError
from ..graphdef.walk import reachable

__all__ = ["UNSAFE_OPS", "Finding", "AuditReport", "audit_meta_graph", "audit_checkpoint",
           "check_graph_safe"]

_READS, _WRITES, _NETWORK, _CODE = "reads files", "writes files", "network", "runs code"


def _ops(category: str, reason: str, *names: str) -> dict[str, tuple[str, str]]:
    return {n: (category, reason) for n in names}


#: Op types flagged wherever they appear: ``{op type: (category, what it does)}``. Names of
#: ops from old ``tf.contrib`` releases are included: they are audited by name, registered or not.
UNSAFE_OPS: dict[str, tuple[str, str]] = {
    **_ops(_READS, "reads the file its input names", "ReadFile", "ImmutableConst",
           "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
           "GenerateVocabRemapping", "LoadAndRemapMatrix"),
    **_ops(_READS, "lists the files matching a pattern", "MatchingFiles", "MatchingFilesDataset",
           "ExperimentalMatchingFilesDataset"),
    **_ops(_READS, "a queue reader over files", "TFRecordReader", "TFRecordReaderV2",
           "TextLineReader", "TextLineReaderV2", "WholeFileReader", "WholeFileReaderV2",
           "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "IdentityReader",
           "IdentityReaderV2", "LMDBReader", "RecordInput", "BigQueryReader"),
    **_ops(_READS, "a dataset that reads files", "TFRecordDataset", "TFRecordDatasetV2",
           "TextLineDataset", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
           "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "LMDBDataset",
           "ExperimentalLMDBDataset", "LoadDataset", "SnapshotDatasetReader",
           "SnapshotNestedDatasetReader", "SnapshotChunkDataset", "ListSnapshotChunksDataset",
           "SqlDataset", "ExperimentalSqlDataset", "SequenceFileDataset"),
    **_ops(_READS, "builds a dataset from a serialised graph this audit cannot see into",
           "DatasetFromGraph"),
    **_ops(_WRITES, "writes the file its input names", "WriteFile", "DumpTensor",
           "CalibrationStatisticsSaver"),
    **_ops(_WRITES, "writes a dataset to files", "DatasetToTFRecord",
           "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "DistributedSave",
           "SnapshotDataset", "SnapshotDatasetV2"),
    **_ops(_WRITES, "a summary writer (event files or a database)", "CreateSummaryFileWriter",
           "CreateSummaryDbWriter", "SummaryWriter", "WriteSummary", "WriteScalarSummary",
           "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary",
           "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter",
           "CloseSummaryWriter", "StatsAggregatorSetSummaryWriter"),
    **_ops(_WRITES, "changes file system settings", "FileSystemSetConfiguration",
           "GcsConfigureCredentials", "GcsConfigureBlockCache"),
    **_ops(_NETWORK, "sends or receives tensors over the network", "DataServiceDataset",
           "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
           "RegisterDataset", "RegisterDatasetV2", "RpcClient", "RpcServer", "RpcServerRegister",
           "RpcServerStart", "RpcCall", "RpcCheckStatus", "RpcGetValue", "Rpc", "TryRpc",
           "RemoteCall", "Send", "Recv", "_Send", "_Recv", "_HostSend", "_HostRecv",
           "CollectiveBcastSend", "CollectiveBcastRecv", "CollectiveBcastSendV2",
           "CollectiveBcastRecvV2", "KafkaDataset", "KinesisDataset", "IgniteDataset"),
    **_ops(_NETWORK, "a debug op: sends tensors to the file:// or grpc:// URLs in its attrs",
           "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
           "DebugNumericSummary", "DebugNumericSummaryV2"),
    **_ops(_CODE, "calls back into Python code of the process running the graph", "PyFunc",
           "PyFuncStateless", "EagerPyFunc"),
    **_ops(_CODE, "runs a compiled engine stored in the graph", "TRTEngineOp"),
    **_ops(_WRITES, "writes to stderr or to the file in its output_stream attr", "PrintV2"),
}

_SAVE_RESTORE = {"Save": _WRITES, "SaveSlices": _WRITES, "SaveV2": _WRITES,
                 "MergeV2Checkpoints": _WRITES, "Restore": _READS, "RestoreSlice": _READS,
                 "RestoreV2": _READS, "DTensorRestoreV2": _READS}


@dataclass(frozen=True)
class Finding:
    """One flagged op: node name, op type, category (``reads files``, ``writes files``,
    ``network``, ``runs code``), what it does, and the library function holding it, if any."""

    op: str
    type: str
    category: str
    reason: str
    function: str = ""

    def __str__(self) -> str:
        where = f"{self.function}/" if self.function else ""
        return f"{self.type} '{where}{self.op}' ({self.category}: {self.reason})"


@dataclass
class AuditReport:
    """What :func:`audit_meta_graph` found: flagged ops, and how many ops and saver ops it saw."""

    source: str
    ops_checked: int = 0
    saver_ops: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def __str__(self) -> str:
        head = (f"audit of {self.source}: {self.ops_checked} ops checked, {self.saver_ops} of "
                "them the saver's own save/restore ops (accepted)")
        if self.ok:
            return head + "\nno op reads or writes files, opens connections or runs code"
        lines = [head, f"FLAGGED ({len(self.findings)}):"]
        width = max(len(f.type) for f in self.findings)
        for f in self.findings:
            name = f"{f.function}/{f.op}" if f.function else f.op
            lines.append(f"  {f.type:<{width}}  {name}  [{f.category}] {f.reason}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "ops_checked": self.ops_checked,
                "saver_ops": self.saver_ops,
                "flagged": [{"op": f.op, "type": f.type, "category": f.category,
                             "reason": f.reason, "function": f.function}
                            for f in self.findings]}


def audit_meta_graph(meta, source: str = "graph") -> AuditReport:
    """Flag the ops of ``meta`` (a ``MetaGraphDef``) and of its function library that read or
    write files, use the network or run code; see the module docstring for the saver's ops."""
    report = AuditReport(source)
    accepted = _saver_own_ops(meta)
    for node in meta.graph_def.node:
        report.ops_checked += 1
        if node.name in accepted:
            report.saver_ops += 1
            continue
        finding = _flag(node)
        if finding:
            report.findings.append(finding)
    for fn in meta.graph_def.library.function:
        for node in fn.node_def:
            report.ops_checked += 1
            finding = _flag(node, fn.signature.name)
            if finding:
                report.findings.append(finding)
    return report


def audit_checkpoint(path: str) -> AuditReport:
    """Audit the ``.meta`` of the checkpoint at ``path``, or a ``.meta`` file given alone.

    Returns:
        The report; a checkpoint without ``.meta`` holds no graph, so nothing is flagged.

    Raises:
        CheckpointNotFoundError, CheckpointCorruptError: no checkpoint, or an unreadable ``.meta``.
    """
    from ..formats import storage
    from ..formats.checkpoint import locate
    from ..formats.metafile import read_meta_graph

    if path.endswith(".meta") and storage.isfile(path):
        meta_path = path
    else:
        meta_path = locate(path).meta
    if meta_path is None:
        return AuditReport(f"{path} (no .meta: no graph to run)")
    return audit_meta_graph(read_meta_graph(meta_path), meta_path)


def check_graph_safe(checkpoint, *, allow_unsafe: bool = False) -> AuditReport | None:
    """Refuse to go on with ``checkpoint``'s graph (a :class:`~ckptsurgery.formats.checkpoint.Checkpoint`)
    if it holds ops that touch files, the network or run code, unless ``allow_unsafe``.

    Returns:
        The audit report (None when the checkpoint has no ``.meta``).

    Raises:
        UnsafeGraphError: flagged ops and not ``allow_unsafe``; the message names them.
    """
    meta = checkpoint.meta_graph
    if meta is None:
        return None
    report = audit_meta_graph(meta, checkpoint.files.meta)
    if report.findings and not allow_unsafe:
        shown = "; ".join(str(f) for f in report.findings[:4])
        more = f" and {len(report.findings) - 4} more" if len(report.findings) > 4 else ""
        raise UnsafeGraphError(
            f"the graph of '{checkpoint.prefix}' has {len(report.findings)} op(s) that touch "
            f"files, the network or run code: {shown}{more}; see 'ckptsurgery audit "
            f"{checkpoint.prefix}', and pass --allow-unsafe-ops only if you trust its author")
    return report


def _flag(node, function: str = "") -> Finding | None:
    if node.op in _SAVE_RESTORE:
        return Finding(node.name, node.op, _SAVE_RESTORE[node.op],
                       "a checkpoint save/restore op outside the saver's own subgraph: it can "
                       "read or write a path of the graph's choosing", function)
    known = UNSAFE_OPS.get(node.op)
    if known is None:
        return _flag_by_attrs(node, function)
    category, reason = known
    if node.op == "PrintV2":
        stream = node.attr["output_stream"].s.decode("utf-8", "replace") or "stderr"
        category = _WRITES if stream.startswith("file://") else category
        reason = f"prints to {stream}"
    urls = list(node.attr["debug_urls"].list.s) if "debug_urls" in node.attr else []
    if urls:
        reason += ": " + ", ".join(u.decode("utf-8", "replace") for u in urls)
    return Finding(node.name, node.op, category, reason, function)


def _flag_by_attrs(node, function: str) -> Finding | None:
    """Ops that are harmless unless an attr points them at a file or a URL."""
    if node.op in ("DecodeProtoV2", "EncodeProto"):
        source = node.attr["descriptor_source"].s
        if source and source != b"local://":
            return Finding(node.name, node.op, _READS, "loads proto descriptors from "
                           f"'{source.decode('utf-8', 'replace')}'", function)
    if node.op in ("Copy", "CopyHost") and node.attr["debug_ops_spec"].list.s:
        return Finding(node.name, node.op, _NETWORK, "copies tensors to debug URLs", function)
    return None


def _saver_own_ops(meta) -> set[str]:
    """The save/restore ops that belong to a saver: in its name scope, taking their file name
    from its filename tensor (the ``SaverDef``'s, else the scope's ``Const`` as every
    ``tf.compat.v1.train.Saver`` names it), with nothing outside the scope depending on them."""
    from ..graphdef.metagraph import node_map, op_name

    nodes = node_map(meta)
    consumers: dict[str, list[str]] = {}
    for node in meta.graph_def.node:
        for i in node.input:
            consumers.setdefault(op_name(i), []).append(node.name)
    named = {op_name(v) for col in meta.collection_def.values()
             if col.HasField("node_list") for v in col.node_list.value}
    filenames = dict(_savers(meta))
    accepted = set()
    for node in meta.graph_def.node:
        if node.op not in _SAVE_RESTORE or not node.input:
            continue
        scope = max((s for s in filenames if node.name.startswith(s)), key=len,
                    default=node.name.rpartition("/")[0] + "/")
        filename = filenames.get(scope, scope + "Const")
        if (scope != "/" and _only_inside(node.name, consumers, scope, named)
                and filename in _ancestors_inside(nodes, node.input[:1], scope)):
            accepted.add(node.name)
    return accepted


def _savers(meta) -> list[tuple[str, str]]:
    """``(name scope with '/', filename op name)`` of each ``SaverDef`` of the graph."""
    from ..formats.protos import message_class
    from ..graphdef.metagraph import op_name

    defs = [meta.saver_def] if meta.HasField("saver_def") else []
    col = meta.collection_def.get("savers")
    if col is not None and col.HasField("bytes_list"):
        for raw in col.bytes_list.value:
            try:
                defs.append(message_class("tensorflow.SaverDef").FromString(raw))
            except Exception:  # a damaged entry names no saver: its ops stay flagged
                continue
    out = []
    for sd in defs:
        head, sep, _ = op_name(sd.restore_op_name).rpartition("/")
        if sep and sd.filename_tensor_name:
            out.append((head + "/", op_name(sd.filename_tensor_name)))
    return out


def _only_inside(name: str, consumers, scope: str, named: set[str]) -> bool:
    """Whether nothing outside ``scope`` depends on ``name``, nor does any collection name it
    or what depends on it."""
    reached = reachable([name], lambda n: consumers.get(n, ()))
    return all(n.startswith(scope) and n not in named for n in reached)


def _ancestors_inside(nodes, refs, scope: str) -> set[str]:
    """The ops ``refs`` depend on, walking only inside ``scope``."""
    from ..graphdef.metagraph import op_name

    return reachable([op_name(r) for r in refs], lambda n: (op_name(i) for i in nodes[n].input),
                     enter=lambda n: n in nodes and n.startswith(scope))
