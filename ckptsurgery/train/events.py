"""TensorBoard events of a training run: the graph once, then loss and accuracy per epoch.

``tensorboard --logdir DIR`` shows the grafted graph (Graphs tab) and the curves (Scalars:
``train/loss``, ``valid/accuracy``, and ``test/accuracy`` at the end), written with TF1's
``FileWriter`` so no Keras is involved.
"""

from __future__ import annotations

__all__ = ["EventLog"]


class EventLog:
    """An open TensorBoard event file in ``logdir`` holding ``graph``; close it when done
    (or use it as a context manager)."""

    def __init__(self, logdir: str, graph):
        import tensorflow as tf

        self._tf = tf
        with graph.as_default():  # TF1's writer refuses eager mode
            self._writer = tf.compat.v1.summary.FileWriter(logdir, graph=graph)

    def scalars(self, step: int, **values: float) -> None:
        """Write ``{tag: value}`` at ``step`` (tags like ``train/loss``, given as
        ``train_loss``: the first ``_`` becomes ``/``)."""
        summary = self._tf.compat.v1.Summary(value=[
            self._tf.compat.v1.Summary.Value(tag=tag.replace("_", "/", 1), simple_value=value)
            for tag, value in values.items()])
        self._writer.add_summary(summary, step)
        self._writer.flush()

    def epoch(self, result) -> None:
        """Write an :class:`~ckptsurgery.train.fit.EpochResult`."""
        self.scalars(result.epoch, train_loss=result.train_loss,
                     valid_accuracy=result.valid_accuracy)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
