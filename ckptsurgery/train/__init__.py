"""Training a graph: loss, accuracy and optimizer ops, the minibatch loop, and the data it
trains on (MNIST-like sets, the built-in subset in ``builtin/``).

May import: everything below it (:mod:`ckptsurgery.errors`, ``formats``, ``graphdef``,
``safety``, ``graph``).
"""
