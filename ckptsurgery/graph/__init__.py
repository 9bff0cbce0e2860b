"""A live ``tf.Graph``: importing a meta-graph into one, building layers in it, restoring variables
from a checkpoint, the reference MLP, and exporting a checkpoint from a session.

May import: :mod:`ckptsurgery.errors`, :mod:`ckptsurgery.formats`, :mod:`ckptsurgery.graphdef`,
:mod:`ckptsurgery.safety`.
"""
