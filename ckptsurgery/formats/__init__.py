"""Files on disk, no graph: locating a checkpoint's files, the V2 bundle format and its checks,
reading and streaming tensors, the ``.meta`` file, and atomic outputs.

May import: :mod:`ckptsurgery.errors` only (TensorFlow inside functions, for its checkpoint
reader and protobuf classes).
"""
