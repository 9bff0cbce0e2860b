"""ckptsurgery: surgery on legacy TensorFlow 1.x checkpoints.

Public names are imported lazily (PEP 562), so that ``import ckptsurgery`` and the command's
``--help`` do not import TensorFlow.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # opening checkpoints
    "Checkpoint": "checkpoint", "CheckpointFiles": "checkpoint", "VariableInfo": "checkpoint",
    "locate": "checkpoint", "open_checkpoint": "checkpoint",
    # meta-graphs
    "read_meta_graph": "metagraph", "import_meta_graph": "metagraph",
    # finding things
    "resolve_tensor": "select", "select_variables": "select", "find_placeholder": "select",
    "CkptSurgeryWarning": "select",
    # editing graphs
    "prune": "edit", "cut": "edit", "ancestors": "edit",
    # layers
    "DenseSpec": "layers", "dense": "layers", "parse_dense": "layers",
    # restoring
    "restore": "restore", "RestoreReport": "restore",
    # grafting
    "GraftSpec": "graft", "Plan": "graft", "Grafted": "graft", "build": "graft",
    # training
    "TrainConfig": "train", "add_training_ops": "train", "fit": "train", "evaluate": "train",
    # data
    "load_dataset": "data", "split": "data",
    # exporting
    "export_checkpoint": "export",
    # the demo
    "DemoConfig": "demo", "run_demo": "demo", "STEPS": "demo", "frozen_check": "demo",
    "write_report": "report", "render_table": "report",
    # assertions for users' tests
    "assert_unchanged": "testing", "assert_changed": "testing", "assert_restores": "testing",
    "assert_no_gradient": "testing",
    # integrity and safety
    "check_bundle": "bundle", "read_index": "bundle", "verify_checkpoint": "verify",
    "VerifyReport": "verify", "audit_checkpoint": "audit", "audit_meta_graph": "audit",
    "AuditReport": "audit", "check_graph_safe": "audit", "UnsafeGraphError": "errors",
    # inspecting, comparing and migrating checkpoints
    "inspect_checkpoint": "inspection", "Inspection": "inspection",
    "diff_checkpoints": "diff", "CheckpointDiff": "diff",
    "classify": "slots", "VariableRole": "slots",
    "rename_checkpoint": "rewrite", "strip_checkpoint": "rewrite", "cast_checkpoint": "rewrite",
    "rewrite_checkpoint": "rewrite", "plan_rename": "rewrite", "plan_strip": "rewrite",
    "plan_cast": "rewrite", "RewritePlan": "rewrite", "RewriteResult": "rewrite",
    "RENAME_PRESETS": "rewrite", "rewrite_meta_graph": "metarewrite",
    "saved_variables": "saver", "replace_saver": "saver", "SavedVariable": "saver",
    "copy_tensors": "stream", "read_batches": "stream", "BundleWriter": "stream",
    "convert_checkpoint": "convert", "ConvertResult": "convert",
    # errors
    "CkptSurgeryError": "errors", "UserError": "errors", "InternalError": "errors",
    "NotFoundError": "errors", "SelectionError": "errors", "RestoreError": "errors",
    "OutputError": "errors", "CheckpointNotFoundError": "errors",
    "CheckpointCorruptError": "errors", "GraphImportError": "errors", "DataError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptsurgery' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
