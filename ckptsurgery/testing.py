"""Assertions for users' own tests of checkpoint and graph edits (pytest or plain ``assert``).

Each helper raises ``AssertionError`` with a message naming the variables at fault, so a failing
test says what moved, what is missing, or which variable still gets a gradient::

    from ckptsurgery.testing import assert_unchanged, assert_restores

    def test_transfer_keeps_lower_layers():
        assert_unchanged("base/my_model.ckpt", "out/transfer.ckpt", scope="hidden[12]/")
        assert_restores("out/transfer.ckpt")
"""

from __future__ import annotations

import re

__all__ = ["assert_unchanged", "assert_changed", "assert_restores", "assert_no_gradient"]


def _in_scope(scope: str | None):
    return None if scope is None else (lambda name: re.match(scope, name) is not None)


def _diff(before: str, after: str, scope: str | None, atol: float):
    from .formats.checkpoint import open_checkpoint
    from .migrate.diff import diff_checkpoints

    result = diff_checkpoints(open_checkpoint(before), open_checkpoint(after), atol=atol,
                              only=_in_scope(scope))
    if not (result.identical or result.changed or result.reshaped or result.removed):
        raise AssertionError(f"scope {scope!r} matches no variable of '{before}'")
    return result


def assert_unchanged(before: str, after: str, scope: str | None = None, atol: float = 0.0) -> list[str]:
    """Assert the variables of ``before`` in ``scope`` (a ``get_collection``-style regex) are in
    ``after`` with the same shape and dtype and values within ``atol`` (0: bit-identical).

    Returns:
        The names checked.
    """
    d = _diff(before, after, scope, atol)
    problems = [f"{n}: missing from '{after}'" for n in d.removed]
    problems += [f"{n}: shape or dtype differs" for n in d.reshaped]
    problems += [f"{n}: changed (max abs diff {v:.3g})" for n, v in d.changed.items()]
    if problems:
        raise AssertionError("variables changed between checkpoints:\n  " + "\n  ".join(problems))
    return d.identical


def assert_changed(before: str, after: str, scope: str | None = None) -> list[str]:
    """Assert every variable of ``before`` in ``scope`` differs in ``after`` (it trained).

    Returns:
        The names checked.
    """
    d = _diff(before, after, scope, 0.0)
    if d.identical:
        raise AssertionError("variables did not change: " + ", ".join(d.identical))
    return sorted(d.changed)


def assert_restores(prefix: str) -> dict[str, list[int]]:
    """Assert plain TensorFlow imports ``prefix.meta`` and restores ``prefix`` into a new graph.

    Returns:
        ``{variable name: shape}`` of the restored graph.
    """
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        try:
            saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta")
            saver.restore(sess, prefix)
        except Exception as e:  # any failure is the assertion's subject
            raise AssertionError(f"plain TensorFlow cannot load '{prefix}': {e}") from e
        return {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}


def assert_no_gradient(graph, loss, scope: str) -> list[str]:
    """Assert no variable of ``graph`` in ``scope`` gets a gradient from ``loss`` (it is frozen
    by a ``stop_gradient`` cut, not only left out of ``var_list``).

    Returns:
        The names checked.
    """
    import tensorflow as tf

    variables = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES, scope=scope)
    if not variables:
        raise AssertionError(f"scope {scope!r} matches no trainable variable")
    with graph.as_default():
        grads = tf.compat.v1.gradients(loss, variables)
    leaking = [v.op.name for v, g in zip(variables, grads, strict=True) if g is not None]
    if leaking:
        raise AssertionError("gradient reaches: " + ", ".join(leaking))
    return [v.op.name for v in variables]
