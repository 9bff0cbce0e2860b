"""Reusing the lower layers of a model: the graft spec and plan, building the grafted graph, the
job that restores, trains and exports it, and the demo with its report.

May import: everything below it, :mod:`ckptsurgery.migrate` included (the demo proves frozen
layers with ``diff``); never :mod:`ckptsurgery.cli`.
"""
