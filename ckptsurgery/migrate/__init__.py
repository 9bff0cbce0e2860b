"""Migrating checkpoints without importing their graphs: inspecting, comparing, renaming,
stripping, casting and converting.

May import: everything below it (``errors``, ``formats``, ``graphdef``, ``safety``, ``graph``,
``train``); never :mod:`ckptsurgery.graft`.
"""
