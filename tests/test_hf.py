"""convert --to hf: genuine BERT (classifier, SQuAD, pretraining heads), ALBERT (pretraining,
LAMB), ELECTRA (its discriminator and, with --head generator, its generator) and GPT-2
checkpoints become folders that the real transformers 5 loads with 0 missing, 0 unexpected and 0
mismatched keys, and that compute what the TF1 graph computes on the same inputs (within
1e-5). TensorFlow runs the graphs in a worker process; torch and transformers load once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_cli

# A TensorFlow worker process, torch and transformers: about 20 s for the module.
pytestmark = pytest.mark.slow

FIXTURES = os.path.join(ROOT, "fixtures")
MODELS = ("bert_classifier", "bert_squad", "bert_pretraining", "albert_pretraining",
          "electra_pretraining", "gpt2")
BATCH, SEQ = 3, 8


def _inputs(name: str) -> dict:
    rng = np.random.RandomState(5)
    if name == "gpt2":
        return {"tokens": rng.randint(0, 40, (BATCH, 10)).astype(np.int32)}
    mask = np.ones((BATCH, SEQ), np.int32)
    mask[1, 6:] = 0  # padding, as real batches have
    out = {"input_ids": rng.randint(0, 32, (BATCH, SEQ)).astype(np.int32), "input_mask": mask,
           "segment_ids": np.tile(np.array([0, 0, 0, 1, 1, 1, 1, 1], np.int32), (BATCH, 1))}
    if name.endswith("_pretraining"):
        out["masked_lm_positions"] = np.array([[0, 3, 5], [1, 2, 7], [4, 6, 6]], np.int32)
    return out


@pytest.fixture(scope="session")
def transformers_lib():
    """transformers (and torch) loaded once for the session, one thread."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, str]:
    """Every family fixture converted with the CLI; ``electra_generator`` is the ELECTRA
    fixture's generator (``--head generator``)."""
    out = {}
    for name, head in [*((m, ()) for m in MODELS),
                       ("electra_generator", ("--head", "generator"))]:
        folder = str(tmp_path_factory.mktemp("hf") / name)
        source = "electra_pretraining" if name == "electra_generator" else name
        r = run_cli("convert", os.path.join(FIXTURES, source, "model.ckpt"), "--to", "hf",
                    "--out", folder, "--quiet", *head)
        assert r.returncode == 0, r.stderr
        out[name] = folder
    return out


@pytest.fixture(scope="module")
def tf1_outputs(tmp_path_factory) -> dict[str, dict]:
    """What each fixture's own TF1 graph computes on :func:`_inputs` (in a worker process)."""
    folder = tmp_path_factory.mktemp("tf1")
    jobs = []
    for name in MODELS:
        inputs = str(folder / f"{name}_in.npz")
        np.savez(inputs, **_inputs(name))
        jobs.append({"prefix": os.path.join(FIXTURES, name, "model.ckpt"), "inputs": inputs,
                     "out": str(folder / f"{name}_out.npz")})
    (folder / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "tf1_outputs_worker.py"),
                           str(folder / "jobs.json")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for job, name in zip(jobs, MODELS, strict=True):
        with np.load(job["out"]) as f:
            out[name] = {k: f[k] for k in f.files}
    return out


def _load(transformers_lib, folder: str):
    with open(os.path.join(folder, "config.json")) as f:
        architecture = json.load(f)["architectures"][0]
    model, info = getattr(transformers_lib, architecture).from_pretrained(
        folder, output_loading_info=True)
    assert [len(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")] == [
        0, 0, 0], info
    return model.eval()


def _close(ours, theirs):
    np.testing.assert_allclose(ours.detach().numpy(), theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["bert_classifier", "bert_squad", "bert_pretraining",
                                  "albert_pretraining"])
def test_bert_and_albert_load_and_compute_what_the_tf1_graph_computes(transformers_lib, converted,
                                                             tf1_outputs, name):
    import torch

    model = _load(transformers_lib, converted[name])
    encoder = model.albert if name.startswith("albert") else model.bert
    x = _inputs(name)
    expected = tf1_outputs[name]
    kwargs = {"input_ids": torch.tensor(x["input_ids"], dtype=torch.long),
              "attention_mask": torch.tensor(x["input_mask"], dtype=torch.long),
              "token_type_ids": torch.tensor(x["segment_ids"], dtype=torch.long)}
    with torch.no_grad():
        out = model(**kwargs, output_hidden_states=True)
        _close(out.hidden_states[-1], expected["sequence_output"])
        if name == "bert_classifier":
            _close(model.bert(**kwargs).pooler_output, expected["pooled_output"])
            _close(out.logits, expected["logits"])
            assert out.logits.shape == (BATCH, 3)
        elif name == "bert_squad":
            assert model.bert.pooler is None  # BertForQuestionAnswering has none
            _close(out.start_logits, expected["start_logits"])
            _close(out.end_logits, expected["end_logits"])
        else:  # BERT's next sentence, ALBERT's sentence order
            _close(encoder(**kwargs).pooler_output, expected["pooled_output"])
            at = x["masked_lm_positions"]
            picked = out.prediction_logits[np.arange(BATCH)[:, None], at].reshape(BATCH * 3, -1)
            _close(picked, expected["mlm_logits"])
            _close(out.sop_logits if name.startswith("albert") else out.seq_relationship_logits,
                   expected["nsp_logits"])


def _electra_kwargs(name: str) -> dict:
    import torch

    x = _inputs(name)
    return {"input_ids": torch.tensor(x["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(x["input_mask"], dtype=torch.long),
            "token_type_ids": torch.tensor(x["segment_ids"], dtype=torch.long)}


def test_electra_discriminator_loads_and_computes_what_the_tf1_graph_computes(
        transformers_lib, converted, tf1_outputs):
    import torch

    model = _load(transformers_lib, converted["electra_pretraining"])
    assert type(model).__name__ == "ElectraForPreTraining"
    assert model.config.hidden_act == "gelu"  # ELECTRA's modeling.gelu is the exact (erf) one
    expected = tf1_outputs["electra_pretraining"]
    with torch.no_grad():
        out = model(**_electra_kwargs("electra_pretraining"), output_hidden_states=True)
    _close(out.hidden_states[-1], expected["sequence_output"])
    _close(out.logits, expected["logits"])
    assert out.logits.shape == (BATCH, SEQ)


def test_electra_generator_loads_and_computes_what_the_tf1_graph_computes(
        transformers_lib, converted, tf1_outputs):
    import torch

    model = _load(transformers_lib, converted["electra_generator"])
    assert type(model).__name__ == "ElectraForMaskedLM"
    # the LM head is the shared token embedding, as in ELECTRA's get_token_logits
    assert model.generator_lm_head.weight.data_ptr() == (
        model.electra.embeddings.word_embeddings.weight.data_ptr())
    expected = tf1_outputs["electra_pretraining"]
    at = _inputs("electra_pretraining")["masked_lm_positions"]
    with torch.no_grad():
        out = model(**_electra_kwargs("electra_pretraining"), output_hidden_states=True)
    _close(out.hidden_states[-1], expected["generator_sequence_output"])
    _close(out.logits[np.arange(BATCH)[:, None], at], expected["mlm_logits"])


def test_gpt2_loads_and_computes_what_the_tf1_graph_computes(transformers_lib, converted,
                                                             tf1_outputs):
    import torch

    model = _load(transformers_lib, converted["gpt2"])
    assert model.config.activation_function == "gelu_new"
    with torch.no_grad():
        logits = model(torch.tensor(_inputs("gpt2")["tokens"], dtype=torch.long)).logits
    _close(logits, tf1_outputs["gpt2"]["logits"])


@pytest.mark.parametrize("name", ["bert_classifier", "gpt2", "electra_pretraining"])
def test_the_other_gelu_would_not_match(transformers_lib, converted, tf1_outputs, name):
    """The config's activation matters: with transformers' exact ``gelu`` in place of the
    ``gelu_new`` written (BERT, GPT-2), or ``gelu_new`` in place of ELECTRA's exact ``gelu``,
    the outputs leave the tolerance, so the comparisons above would catch a wrong
    translation."""
    import torch

    folder = converted[name]
    with open(os.path.join(folder, "config.json")) as f:
        architecture = json.load(f)["architectures"][0]
    key = "activation_function" if name == "gpt2" else "hidden_act"
    other = "gelu_new" if name.startswith("electra") else "gelu"
    model = getattr(transformers_lib, architecture).from_pretrained(folder, **{key: other})
    x = _inputs(name)
    with torch.no_grad():
        if name == "gpt2":
            ours = model(torch.tensor(x["tokens"], dtype=torch.long)).logits
            theirs = tf1_outputs[name]["logits"]
        else:
            ours = model(input_ids=torch.tensor(x["input_ids"], dtype=torch.long),
                         attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
                         token_type_ids=torch.tensor(x["segment_ids"], dtype=torch.long),
                         output_hidden_states=True).hidden_states[-1]
            theirs = tf1_outputs[name]["sequence_output"]
    assert np.abs(ours.numpy() - theirs).max() > 1e-4


def test_bert_tokenizer_files_load(transformers_lib, converted):
    tokenizer = transformers_lib.AutoTokenizer.from_pretrained(converted["bert_classifier"])
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "a", "##s"]) == [2, 5, 31]
    assert tokenizer("ab")["input_ids"][0] == 2  # [CLS] first


#: Mixed case, accents, runs of spaces, punctuation, words the vocabularies lack.
TEXTS = {"bert": ["A b, C's as  É!", "zebras x-ray"],
         "albert": ["Bad  CAFÉ hedge", "bàd cafe, hedges! ``beach''", "Deaf chefs ache."]}


def test_tokenizers_give_the_ids_the_families_own_tokenizers_give(transformers_lib, converted,
                                                                    tmp_path):
    """ALBERT's SentencePiece model beside the checkpoint (``30k-clean.model``) becomes
    ``spiece.model`` with the ``tokenizer_config.json`` of ALBERT's preprocessing (lower case,
    accents stripped); BERT's ``vocab.txt`` is carried over. transformers' tokenizers give the ids
    that ALBERT's and BERT's own tokenization.py give (run in a worker process)."""
    folders = {"bert": converted["bert_classifier"], "albert": converted["albert_pretraining"]}
    assert sorted(os.listdir(folders["albert"])) == [
        "config.json", "model.safetensors", "spiece.model", "tokenizer_config.json"]
    with open(os.path.join(FIXTURES, "albert_pretraining", "30k-clean.model"), "rb") as f:
        assert f.read() == open(os.path.join(folders["albert"], "spiece.model"), "rb").read()
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([
        {"family": "bert", "file": os.path.join(FIXTURES, "bert_classifier", "vocab.txt"),
         "texts": TEXTS["bert"]},
        {"family": "albert", "texts": TEXTS["albert"],
         "file": os.path.join(FIXTURES, "albert_pretraining", "30k-clean.model")}]))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "tokenizers_worker.py"),
                           str(jobs)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = dict(zip(("bert", "albert"), json.loads(proc.stdout.splitlines()[-1]), strict=True))
    for family, folder in folders.items():
        tokenizer = transformers_lib.AutoTokenizer.from_pretrained(folder)
        assert type(tokenizer).__name__ == ("AlbertTokenizer" if family == "albert"
                                            else "BertTokenizer")
        ours = [tokenizer(t)["input_ids"] for t in TEXTS[family]]
        assert ours == theirs[family]
        assert {1} < {i for ids in ours for i in ids}  # [UNK]/<unk> and known pieces both


#: docs/families.md's worked example: a run_classifier fork that keeps its head under
#: variable_scope("classifier").
CLASSIFIER_RULES = {
    "family": "bert",
    "heads": [
        {"name": "classification", "about": "sequence classification under classifier/",
         "architecture": "BertForSequenceClassification", "when": ["^classifier/output_weights$"],
         "read": {"num_labels": {"shape": "classifier/output_weights", "dim": 0}}},
        {"name": "none", "about": "encoder only", "architecture": "BertModel", "when": [],
         "strip_prefix": "bert."}],
    "rules": [
        {"match": "^classifier/output_weights$", "to": "classifier.weight",
         "shape": ["num_labels", "hidden_size"], "heads": ["classification"]},
        {"match": "^classifier/output_bias$", "to": "classifier.bias", "shape": ["num_labels"],
         "heads": ["classification"]}],
}


def test_rules_file_maps_a_head_the_package_does_not_know(transformers_lib, tmp_path,
                                                           tf1_outputs):
    import shutil

    import torch

    from ckptsurgery.migrate.rewrite import rename_checkpoint

    folder = tmp_path / "fork"
    src = rename_checkpoint(os.path.join(FIXTURES, "bert_classifier", "model.ckpt"),
                            [(r"^output_", "classifier/output_")], str(folder / "model.ckpt"),
                            progress=False).prefix
    shutil.copy(os.path.join(FIXTURES, "bert_classifier", "bert_config.json"), folder)
    rules = tmp_path / "classifier_rules.json"
    rules.write_text(json.dumps(CLASSIFIER_RULES))
    out = str(tmp_path / "hf")
    assert run_cli("convert", src, "--to", "hf", "--out", out).returncode == 2
    r = run_cli("convert", src, "--to", "hf", "--out", out, "--rules", str(rules), "--quiet")
    assert r.returncode == 0, r.stderr
    model = _load(transformers_lib, out)
    x = _inputs("bert_classifier")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(x["input_ids"], dtype=torch.long),
                       attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
                       token_type_ids=torch.tensor(x["segment_ids"], dtype=torch.long)).logits
    _close(logits, tf1_outputs["bert_classifier"]["logits"])


def test_gpt2_tokenizer_files_are_carried_over(transformers_lib, tmp_path):
    """OpenAI ships ``encoder.json`` and ``vocab.bpe`` beside the checkpoint; transformers reads
    them as ``vocab.json`` and ``merges.txt``. A 40-token byte-level BPE in their format, the
    last token ``<|endoftext|>`` as GPT-2's is."""
    import shutil

    folder = tmp_path / "gpt2"
    shutil.copytree(os.path.join(FIXTURES, "gpt2"), folder)
    tokens = [*"abcdefghijklmnopqrstuvwxyz", "\u0120", "ab", *"ABCDEFGHIJK", "<|endoftext|>"]
    (folder / "encoder.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "vocab.bpe").write_text("#version: 0.2\na b\n")
    out = str(tmp_path / "hf")
    r = run_cli("convert", str(folder / "model.ckpt"), "--to", "hf", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["config.json", "merges.txt", "model.safetensors",
                                       "tokenizer_config.json", "vocab.json"]
    tokenizer = transformers_lib.AutoTokenizer.from_pretrained(out)
    assert tokenizer("ab")["input_ids"] == [27]
    config = json.load(open(os.path.join(out, "config.json")))
    assert tokenizer.eos_token_id == config["eos_token_id"] == 39
