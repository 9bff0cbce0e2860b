"""ckptsurgery: surgery on legacy TensorFlow 1.x checkpoints.

The names below are what users call; everything else is reachable from its module (see
``docs/architecture.md`` for the layers). They are imported lazily (PEP 562), so that
``import ckptsurgery`` and the command's ``--help`` do not import TensorFlow. Assertions for
users' test suites are in :mod:`ckptsurgery.testing`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # opening checkpoints and meta-graphs
    "open_checkpoint": "formats.checkpoint", "Checkpoint": "formats.checkpoint",
    "locate": "formats.checkpoint", "read_meta_graph": "formats.metafile",
    # finding things in graphs and editing them (protobuf level)
    "resolve_tensor": "graphdef.select", "select_variables": "graphdef.select",
    "layer_groups": "graphdef.layergroups",
    "prune": "graphdef.edit", "cut": "graphdef.edit", "uncut": "graphdef.edit",
    "CkptSurgeryWarning": "errors",
    # live graphs: import, layers, restore, export
    "import_meta_graph": "graph.importer", "DenseSpec": "graph.layers",
    "restore": "graph.restore", "RestoreReport": "graph.restore",
    "export_checkpoint": "graph.export",
    # training
    "TrainConfig": "train.fit", "add_training_ops": "train.fit", "fit": "train.fit",
    "evaluate": "train.fit", "load_dataset": "train.data", "split": "train.data",
    # grafting and the demo
    "GraftSpec": "graft.build", "Plan": "graft.build", "Grafted": "graft.build",
    "build": "graft.build", "GraftJob": "graft.job", "GraftResult": "graft.job",
    "run_graft": "graft.job", "DemoConfig": "graft.demo", "run_demo": "graft.demo",
    "render_table": "graft.report",
    # inspecting, comparing and migrating checkpoints
    "inspect_checkpoint": "migrate.inspection", "diff_checkpoints": "migrate.diff",
    "rename_checkpoint": "migrate.rewrite", "strip_checkpoint": "migrate.rewrite",
    "cast_checkpoint": "migrate.rewrite", "RENAME_PRESETS": "migrate.rewrite",
    "convert_checkpoint": "migrate.convert", "classify": "graphdef.roles",
    "convert_to_hf": "migrate.hf", "plan_hf": "migrate.hf", "recognise": "migrate.family",
    "export_model": "migrate.export", "ModelExport": "migrate.export",
    "serving_graph": "graph.serving", "write_saved_model": "graph.serving",
    "dropout_sites": "graphdef.dropout", "without_dropout": "graphdef.dropout",
    # integrity and safety
    "verify_checkpoint": "safety.verify", "audit_checkpoint": "safety.audit",
    # errors
    "CkptSurgeryError": "errors", "UserError": "errors", "InternalError": "errors",
    "NotFoundError": "errors", "SelectionError": "errors", "RestoreError": "errors",
    "OutputError": "errors", "CheckpointNotFoundError": "errors",
    "CheckpointCorruptError": "errors", "GraphImportError": "errors", "DataError": "errors",
    "UnsafeGraphError": "errors",
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
