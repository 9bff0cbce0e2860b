"""A process that tokenizes texts with the families' own TF1-era tokenizers and prints the ids.

    python tests/tokenizers_worker.py JOBS.json

Each job is ``{"family": "bert" | "albert", "file": VOCAB_OR_SPM_MODEL, "texts": [...]}``; the
output is one JSON list per job of ``[CLS] + ids + [SEP]`` per text, as the families'
``run_classifier.py`` builds them: BERT's ``tokenization.FullTokenizer(vocab_file,
do_lower_case=True)`` (PyPI ``bert-tensorflow``); ALBERT's ``preprocess_text(text, lower=True)``
then ``FullTokenizer(None, do_lower_case=True, spm_model_file=...)`` (``albert-tensorflow``).
Their modules ``import tensorflow as tf`` for its logging and files, so they are imported with
``tensorflow`` standing for ``tf.compat.v1``; TensorFlow stays out of the test process.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tokenization(family: str):
    import tensorflow as tf

    real = sys.modules["tensorflow"]
    sys.modules["tensorflow"] = tf.compat.v1
    try:
        module = importlib.import_module(f"{family}.tokenization")
    finally:
        sys.modules["tensorflow"] = real
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # their flags' defaults (BERT's --preserve_unused_tokens)
    return module


def ids(family: str, path: str, texts: list[str]) -> list[list[int]]:
    tokenization = _tokenization(family)
    if family == "albert":
        tokenizer = tokenization.FullTokenizer(None, do_lower_case=True, spm_model_file=path)
        texts = [tokenization.preprocess_text(t, lower=True) for t in texts]
    else:
        tokenizer = tokenization.FullTokenizer(vocab_file=path, do_lower_case=True)
    cls, sep = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    return [[cls, *tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t)), sep] for t in texts]


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(json.dumps([ids(j["family"], j["file"], j["texts"]) for j in json.load(f)]))
