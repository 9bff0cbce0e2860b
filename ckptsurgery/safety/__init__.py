"""Trusting checkpoints from strangers: verifying that a checkpoint reads back whole, gating every
write on that check (:mod:`.staging`), and auditing graphs for ops that touch files, the network
or load code.

May import: :mod:`ckptsurgery.errors`, :mod:`ckptsurgery.formats`, :mod:`ckptsurgery.graphdef`.
"""
