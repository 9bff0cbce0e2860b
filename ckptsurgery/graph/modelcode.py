"""A graph from the user's model code, for checkpoints published without a ``.meta``.

The TF-slim model zoo's ``inception_v3.ckpt``, most research releases (``.index`` + ``.data``
only) and checkpoints whose ``.meta`` no longer imports keep their graph in Python. ``--model
FILE.py:FUNC`` or ``--model package.module:FUNC`` names a TF1 model function: called with no
arguments in a fresh ``tf.Graph``, it creates its placeholders and variables and returns its
output tensor, or a dict of named endpoints. The graph is then exported as a ``MetaGraphDef``
(endpoints as collections, so ``--at logits`` finds them), and from there every command works
as with a ``.meta`` on disk: graft points, restore, freezing, training, export (which writes a
full ``.meta``, so the next run needs no code).

``--map 'OLD/=NEW/'`` reads a graph variable ``NEW/x`` from the checkpoint's ``OLD/x``, as the
assignment map of ``tf.compat.v1.train.init_from_checkpoint`` does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from ..errors import UserError, first_line

__all__ = ["DEFAULT_ENDPOINT", "load_model_function", "meta_graph_from_code", "parse_name_map",
           "mapped_sources"]

#: The collection that holds a model function's output when it returns a single tensor.
DEFAULT_ENDPOINT = "outputs"


def load_model_function(ref: str):
    """The callable ``ref`` names: ``path/to/file.py:FUNC`` or ``package.module:FUNC``.

    Raises:
        UserError: ``ref`` is not of that form, the file or module is missing or fails to
            import, or it has no callable ``FUNC``.
    """
    where, sep, func = ref.rpartition(":")
    if not sep or not where or not func.isidentifier():
        raise UserError(f"--model '{ref}': give FILE.py:FUNCTION or package.module:FUNCTION")
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise UserError(f"--model '{ref}': no file '{where}'")
        name = "ckptsurgery_model_" + os.path.splitext(os.path.basename(where))[0]
        spec = importlib.util.spec_from_file_location(name, where)
        module = importlib.util.module_from_spec(spec)
        folder = os.path.dirname(os.path.abspath(where))
        sys.path.insert(0, folder)  # the model file's own imports (its sibling modules)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise UserError(f"--model '{ref}': importing '{where}' failed: "
                            f"{type(e).__name__}: {first_line(e)}") from e
        finally:
            sys.path.remove(folder)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise UserError(f"--model '{ref}': cannot import module '{where}': "
                            f"{type(e).__name__}: {first_line(e)}; install it or give "
                            "FILE.py:FUNCTION") from e
    fn = getattr(module, func, None)
    if not callable(fn):
        from ..errors import nearest

        near = nearest(func, [n for n in dir(module) if callable(getattr(module, n))
                              and not n.startswith("_")])
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UserError(f"--model '{ref}': '{where}' has no function '{func}'{hint}")
    return fn


def meta_graph_from_code(ref: str):
    """Call the model function ``ref`` names in a fresh graph; its ``MetaGraphDef``.

    The function's output (a tensor) goes in collection :data:`DEFAULT_ENDPOINT`, each entry
    of a returned dict in a collection of its key; a saver over every global variable is added
    when the function made none, so the graph restores and exports like one read from a
    ``.meta``.

    Raises:
        UserError: see :func:`load_model_function`; the function raises, returns something
            other than a tensor or a dict of tensors, or creates no variable.
    """
    import tensorflow as tf

    from ..formats.protos import from_tensorflow

    fn = load_model_function(ref)
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        try:
            out = fn()
        except Exception as e:
            raise UserError(f"--model '{ref}': the model function raised "
                            f"{type(e).__name__}: {first_line(e)}") from e
        endpoints = out if isinstance(out, dict) else {DEFAULT_ENDPOINT: out}
        for key, tensor in endpoints.items():
            if not isinstance(tensor, tf.Tensor) or tensor.graph is not graph:
                raise UserError(f"--model '{ref}': endpoint '{key}' is "
                                f"{type(tensor).__name__}, not a tensor of the model's graph; "
                                "return the output tensor or a dict {name: tensor}")
            graph.clear_collection(key)
            graph.add_to_collection(key, tensor)
        variables = tf1.global_variables()
        if not variables:
            raise UserError(f"--model '{ref}': the model function created no variable, so "
                            "nothing can be restored from the checkpoint")
        savers = graph.get_collection(tf1.GraphKeys.SAVERS) or [tf1.train.Saver(variables)]
        meta = tf1.train.export_meta_graph(graph=graph, saver_def=savers[0].as_saver_def())
    return from_tensorflow(meta)


def parse_name_map(items: list[str]) -> list[tuple[str, str]]:
    """``['OLD/=NEW/', ...]`` as ``[(checkpoint prefix, graph prefix), ...]``.

    Raises:
        UserError: an item has no ``=`` or an empty graph side.
    """
    pairs = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not new:
            raise UserError(f"--map '{item}': give CHECKPOINT_SCOPE=GRAPH_SCOPE, e.g. "
                            "'InceptionV3/=encoder/'")
        pairs.append((old, new))
    return pairs


def mapped_sources(names, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """``{graph variable: checkpoint key}`` for the ``names`` a map renames (first match)."""
    out = {}
    for name in names:
        for old, new in pairs:
            if name.startswith(new):
                out[name] = old + name[len(new):]
                break
    return out
