"""Knowledge distillation from a trained model (Hinton et al., 2015): the student learns from the
teacher's soft targets, softmax at a temperature ``T``, as well as from the hard labels.

The teacher runs once over the training images in a graph of its own, never trained (like
``--cache-frozen``), and its logits are fed with each batch; the student's loss is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels)``.
The teacher may be the checkpoint being grafted (a "born-again" student) or any model with the
same classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

__all__ = ["Distillation", "Teacher", "teacher_logits"]


@dataclass(frozen=True)
class Distillation:
    """Where the soft targets come from and how much they weigh."""

    teacher: str
    output: str | None = None
    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UserError(f"--temperature {self.temperature:g}: give a number above 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--alpha {self.alpha:g}: give a weight between 0 and 1")


@dataclass
class Teacher:
    """What the teacher gave: the tensor its soft targets come from (``output``) and its
    logits for each array of images asked for, in order."""

    output: str
    logits: list


def teacher_logits(distillation: Distillation, *xs, batch: int = 5000) -> Teacher:
    """The teacher's logits for each array of images in ``xs`` (shaped for the student's
    input; reshaped to the teacher's), computed in its own graph, a bounded batch at a time.

    Raises:
        UserError: the teacher has no ``.meta``, no output is found (name it with
            ``--teacher-output``), or its input does not take the images.
    """
    import numpy as np
    import tensorflow as tf

    from ..formats.checkpoint import open_checkpoint
    from ..graph.graftpoints import inference_outputs
    from ..graph.importer import import_meta_graph
    from ..graph.restore import restore
    from ..graphdef.feeds import feed_array, resolve_feeds
    from ..graphdef.metagraph import node_map, op_name, placeholders
    from ..graphdef.select import find_placeholder, resolve_tensor
    from ..graphdef.walk import ancestors
    from ..train.data import shape_for_input

    teacher = open_checkpoint(distillation.teacher)
    meta = teacher.meta_graph
    if meta is None:
        raise UserError(f"--distill-from '{teacher.prefix}' has no .meta; the teacher must run")
    if distillation.output:
        output = resolve_tensor(meta, distillation.output)
    else:
        found = inference_outputs(meta)
        if not found:
            raise UserError(f"--distill-from '{teacher.prefix}': no output found; name its "
                            "logits with --teacher-output")
        output = found[0]
    node = node_map(meta)[op_name(output)]
    if node.op == "Softmax":  # soft targets are made from logits
        output = node.input[0] if ":" in node.input[0] else node.input[0] + ":0"
    below = ancestors(meta, [output])
    inputs = find_placeholder(meta, None, "inputs", "float", among=below)
    if inputs is None:
        raise UserError(f"--distill-from: the teacher's '{output}' depends on no float input")
    kinds = placeholders(meta)
    needed = [p for p, dtype in kinds.items() if p in below and p != op_name(inputs)
              and not dtype.startswith(("int", "uint"))]
    feeds = resolve_feeds(meta, needed, {})
    graph = tf.Graph()
    import_meta_graph(meta, graph)
    x_in, out = graph.get_tensor_by_name(inputs), graph.get_tensor_by_name(output)
    switches = {graph.get_tensor_by_name(f"{n}:0"): f for n, f in feeds.items()}
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        # The variables the logits read, every one of them: a teacher missing one is an error
        # naming it, not an uninitialised value halfway through.
        variables = [v for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
                     if v.op.name in below]
        restore(session, variables, teacher)
        logits = []
        for x in xs:
            images = shape_for_input(x, x_in.shape.as_list() if x_in.shape.rank is not None
                                     else None, x_in.name)
            chunks = []
            for start in range(0, len(images), batch):
                part = images[start:start + batch]
                feed = {x_in: part, **{t: feed_array(f, len(part)) for t, f in switches.items()}}
                chunks.append(session.run(out, feed))
            logits.append(np.concatenate(chunks).astype(np.float32))
    return Teacher(output, logits)
