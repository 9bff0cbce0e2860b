"""Meta-graph protobufs, never a live ``tf.Graph``: names and nodes, collections, the graph walk,
finding tensors and variables by name, pruning and cutting, the saver, ``.meta`` rewriting, and
what each saved variable is for. Works on graphs this TensorFlow cannot import.

May import: :mod:`ckptsurgery.errors`, :mod:`ckptsurgery.formats`.
"""
