"""Files on disk, no graph: locating a checkpoint's files, the V2 bundle format (its checks, a
reader and a writer), TensorFlow's protos and op list vendored, streaming tensors, the ``.meta``
file, and atomic outputs.

May import: :mod:`ckptsurgery.errors` only. TensorFlow only inside functions, for V1
checkpoints (its reader) and to hand a message to it (``protos.to_tensorflow``).
"""
