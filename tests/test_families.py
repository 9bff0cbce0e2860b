"""Model families without TensorFlow: inspect names the family, its sizes, head and config;
convert --to hf accounts for every variable, and refuses (one line, exit 2, nothing written) an
unknown variable, a shape the config does not give and a missing config."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import ROOT, read_vars, run_cli
from migrate_helpers import corpus_prefix, readable_entries
from safety_helpers import assert_clean_error

from ckptsurgery.formats.checkpoint import open_checkpoint
from ckptsurgery.formats.safetensors import read_header
from ckptsurgery.migrate.family import recognise
from ckptsurgery.migrate.hf import convert_to_hf, parse_size
from ckptsurgery.migrate.rewrite import rename_checkpoint

FIXTURES = os.path.join(ROOT, "fixtures")
CLASSIFIER = os.path.join(FIXTURES, "bert_classifier", "model.ckpt")
GPT2 = os.path.join(FIXTURES, "gpt2", "model.ckpt")


def _copy(name: str, folder, *, config: bool = True) -> str:
    """A fixture's checkpoint files (and, with ``config``, its side files) in ``folder``."""
    src = os.path.join(FIXTURES, name)
    os.makedirs(folder, exist_ok=True)
    for entry in os.listdir(src):
        if entry.startswith("model.ckpt") or (config and not entry.startswith("checkpoint")):
            shutil.copy(os.path.join(src, entry), folder)
    return os.path.join(str(folder), "model.ckpt")


@pytest.mark.parametrize("name, family, head, architecture, read", [
    ("bert_classifier", "bert", "classification", "BertForSequenceClassification",
     {"num_hidden_layers": 2, "hidden_size": 16, "vocab_size": 32, "intermediate_size": 32,
      "max_position_embeddings": 16, "type_vocab_size": 2, "num_labels": 3}),
    ("bert_squad", "bert", "squad", "BertForQuestionAnswering", {"num_hidden_layers": 2}),
    ("bert_pretraining", "bert", "pretraining", "BertForPreTraining", {"vocab_size": 32}),
    ("albert_pretraining", "albert", "pretraining", "AlbertForPreTraining",
     {"num_hidden_groups": 1, "inner_group_num": 1, "embedding_size": 8, "hidden_size": 16}),
    ("gpt2", "gpt2", "lm", "GPT2LMHeadModel",
     {"n_layer": 2, "n_embd": 16, "n_vocab": 40, "n_ctx": 12}),
])
def test_inspect_names_the_family(name, family, head, architecture, read):
    r = run_cli("inspect", os.path.join(FIXTURES, name, "model.ckpt"), "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)["family"]
    assert (found["family"], found["head"], found["architecture"]) == (family, head,
                                                                        architecture)
    assert read.items() <= found["read"].items()
    config = {"gpt2": "hparams.json", "albert": "albert_config.json"}.get(family,
                                                                          "bert_config.json")
    assert found["config_source"] == f"{config} beside the checkpoint"
    assert found["missing"] == [] and found["conflicts"] == {}


ELECTRA = os.path.join(FIXTURES, "electra_pretraining", "model.ckpt")


def test_inspect_names_electra_its_discriminator_and_generator_and_its_defaults():
    """ELECTRA's releases ship no config: the sizes come from the shapes (the discriminator's
    under electra/, the token embeddings' width), the heads from ELECTRA's own rule."""
    r = run_cli("inspect", ELECTRA, "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)["family"]
    assert (found["family"], found["head"], found["architecture"]) == (
        "electra", "discriminator", "ElectraForPreTraining")
    assert found["heads"] == {"discriminator": "ElectraForPreTraining",
                              "generator": "ElectraForMaskedLM", "none": "ElectraModel"}
    assert found["read"] == {"num_hidden_layers": 2, "hidden_size": 32, "embedding_size": 16,
                             "vocab_size": 32, "intermediate_size": 128,
                             "max_position_embeddings": 16, "type_vocab_size": 2}
    assert found["defaults"] == {"num_attention_heads": 1, "hidden_act": "gelu"}
    assert found["config_source"] is None and found["missing"] == []
    text = run_cli("inspect", ELECTRA).stdout
    assert ("             also here: generator -> ElectraForMaskedLM, none -> ElectraModel "
            "(convert --head NAME)") in text
    assert "optimizer    AdamWeightDecay: 164 slot(s) (adam_m, adam_v)" in text


def test_two_sentencepiece_models_beside_an_albert_are_one_line(tmp_path):
    prefix = _copy("albert_pretraining", tmp_path / "a")
    shutil.copy(tmp_path / "a" / "30k-clean.model", tmp_path / "a" / "other.model")
    r = run_cli("convert", prefix, "--to", "hf", "--out", str(tmp_path / "hf"))
    assert_clean_error(r.returncode, r.stderr, 2, "2 files match '*.model'",
                       "30k-clean.model, other.model", "keep only it there")
    assert not (tmp_path / "hf").exists()
    os.remove(tmp_path / "a" / "other.model")
    plan = convert_to_hf(prefix, str(tmp_path / "hf"), dry_run=True)
    assert plan.tokenizer == {str(tmp_path / "a" / "30k-clean.model"): "spiece.model"}
    assert plan.tokenizer_config == {"tokenizer_class": "AlbertTokenizer",
                                     "do_lower_case": True, "keep_accents": False,
                                     "model_max_length": 16}


def test_a_default_of_a_size_the_shapes_do_not_give_stays_unknown():
    """An ELECTRA checkpoint cut down to its embeddings: still recognised, its heads from
    ELECTRA's rule left unknown (no hidden size to compute them from) rather than a crash."""
    report, _ = recognise({"electra/embeddings/word_embeddings": (32, 16)}, folder=FIXTURES)
    assert (report.family, report.head, report.read["embedding_size"]) == ("electra", "none", 16)
    assert report.defaults == {"hidden_act": "gelu"}
    assert "num_attention_heads" not in report.values


def _mapping(stdout: str) -> dict[str, str]:
    body = [line for line in stdout.splitlines() if line.startswith("  ")]
    return {line.split()[0]: " ".join(line.split()[1:]) for line in body}


def test_electra_dry_runs_account_for_every_variable_once_per_part(tmp_path):
    """The discriminator and the generator each write the shared embeddings; every other
    weight goes to exactly one of them, every slot and the step to neither."""
    keys = list(open_checkpoint(ELECTRA).variables)
    parts = {}
    for head in ("discriminator", "generator"):
        r = run_cli("convert", ELECTRA, "--to", "hf", "--out", str(tmp_path / head),
                    "--dry-run", "--head", head)
        assert r.returncode == 0, r.stderr
        parts[head] = text = _mapping(r.stdout)
        assert sorted(text) == sorted(keys)
    disc, gen = parts["discriminator"], parts["generator"]
    assert disc["discriminator_predictions/dense_1/kernel"] == (
        "-> discriminator_predictions.dense_prediction.weight (transpose)")
    assert disc["electra/embeddings_project/kernel"] == (
        "-> electra.embeddings_project.weight (transpose)")
    assert disc["generator/encoder/layer_0/output/dense/kernel"] == (
        "left out: not part of ElectraForPreTraining")
    assert gen["generator/encoder/layer_1/attention/self/query/kernel"] == (
        "-> electra.encoder.layer.1.attention.self.query.weight (transpose)")
    assert gen["generator/embeddings_project/bias"] == "-> electra.embeddings_project.bias"
    assert gen["generator_predictions/output_bias"] == "-> generator_lm_head.bias"
    assert gen["electra/encoder/layer_0/output/dense/kernel"] == (
        "left out: not part of ElectraForMaskedLM")
    for text in (disc, gen):
        assert text["electra/embeddings/word_embeddings"] == (
            "-> electra.embeddings.word_embeddings.weight")
        assert text["global_step"] == "left out: step counter"
        assert text["generator/encoder/layer_0/output/dense/kernel/adam_m"].startswith(
            "left out: optimizer slot adam_m")
    written = {h: {k for k, v in t.items() if v.startswith("->")} for h, t in parts.items()}
    weights = {k for k in keys if not k.endswith(("/adam_m", "/adam_v")) and k != "global_step"}
    shared = {k for k in weights if k.startswith("electra/embeddings/")}
    assert len(shared) == 5 and written["discriminator"] & written["generator"] == shared
    assert len(written["discriminator"]) == 43 and len(written["generator"]) == 44
    assert written["discriminator"] | written["generator"] == weights


def test_electra_configs_are_each_parts_own(tmp_path):
    disc = convert_to_hf(ELECTRA, str(tmp_path / "d"), progress=False)
    gen = convert_to_hf(ELECTRA, str(tmp_path / "g"), head="generator", progress=False)
    expected = {"model_type": "electra", "vocab_size": 32, "embedding_size": 16,
                "num_hidden_layers": 2, "max_position_embeddings": 16, "type_vocab_size": 2,
                "hidden_act": "gelu"}  # ELECTRA's gelu is the exact (erf) one
    assert disc.plan.config == {**disc.plan.config, **expected, "hidden_size": 32,
                                "intermediate_size": 128, "num_attention_heads": 1,
                                "architectures": ["ElectraForPreTraining"]}
    assert gen.plan.config == {**gen.plan.config, **expected, "hidden_size": 8,
                               "intermediate_size": 32, "num_attention_heads": 1,
                               "architectures": ["ElectraForMaskedLM"]}
    assert sorted(os.listdir(gen.out)) == ["config.json", "model.safetensors",
                                           "tokenizer_config.json", "vocab.txt"]


def test_electra_config_overrides_the_defaults_and_a_missing_head_is_one_line(tmp_path):
    config = tmp_path / "electra.json"
    config.write_text(json.dumps({"num_attention_heads": 2}))
    r = run_cli("inspect", ELECTRA, "--config", str(config), "--json")
    found = json.loads(r.stdout)["family"]
    assert found["config"] == {"num_attention_heads": 2} and found["defaults"] == {
        "hidden_act": "gelu"}
    plan = convert_to_hf(ELECTRA, str(tmp_path / "d"), config=str(config), dry_run=True)
    assert plan.config["num_attention_heads"] == 2
    r = run_cli("convert", CLASSIFIER, "--to", "hf", "--out", str(tmp_path / "x"), "--head",
                "generator")
    assert_clean_error(r.returncode, r.stderr, 2, "--head generator", "classification, none")
    assert not (tmp_path / "x").exists()


def test_inspect_without_the_config_says_what_is_unknown_and_takes_config(tmp_path):
    prefix = _copy("bert_squad", tmp_path / "c", config=False)
    r = run_cli("inspect", prefix)
    assert r.returncode == 0, r.stderr
    assert ("config       none found: num_attention_heads, hidden_act unknown; put the "
            "release's config beside the checkpoint or pass --config FILE") in r.stdout
    given = os.path.join(FIXTURES, "bert_squad", "bert_config.json")
    r = run_cli("inspect", prefix, "--config", given, "--json")
    found = json.loads(r.stdout)["family"]
    assert found["config_source"] == f"--config {given}"
    assert found["config"]["num_attention_heads"] == 2 and found["missing"] == []


def test_corpus_checkpoints_are_generic(shared):
    for entry in readable_entries():
        r = run_cli("inspect", corpus_prefix(entry), "--json")
        assert r.returncode == 0, (entry, r.stderr)
        assert json.loads(r.stdout)["family"]["family"] == "generic", entry


def test_dry_run_accounts_for_every_variable_and_writes_nothing(tmp_path):
    out = tmp_path / "hf"
    r = run_cli("convert", os.path.join(FIXTURES, "bert_squad", "model.ckpt"), "--to", "hf",
                "--out", str(out), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not out.exists()
    keys = list(open_checkpoint(os.path.join(FIXTURES, "bert_squad", "model.ckpt")).variables)
    body = [line for line in r.stdout.splitlines() if line.startswith("  ")]
    assert sorted(line.split()[0] for line in body) == sorted(keys)
    text = {line.split()[0]: " ".join(line.split()[1:]) for line in body}
    assert text["bert/encoder/layer_1/intermediate/dense/kernel"] == (
        "-> bert.encoder.layer.1.intermediate.dense.weight (transpose)")
    assert text["cls/squad/output_weights"] == "-> qa_outputs.weight"
    assert text["bert/pooler/dense/kernel"] == "left out: not part of BertForQuestionAnswering"
    assert text["global_step"] == "left out: step counter"
    assert text["cls/squad/output_bias/adam_v"] == (
        "left out: optimizer slot adam_v (AdamWeightDecay) of cls/squad/output_bias")


def test_output_is_the_weights_bit_for_bit_in_transformers_layout(tmp_path):
    result = convert_to_hf(GPT2, str(tmp_path / "g"), progress=False)
    from safetensors.numpy import load_file

    tensors = load_file(os.path.join(result.out, "model.safetensors"))
    source = read_vars(GPT2)
    assert len(tensors) == 28
    assert np.array_equal(tensors["transformer.h.1.attn.c_attn.weight"],
                          source["model/h1/attn/c_attn/w"][0])  # squeezed, not transposed
    assert tensors["transformer.h.1.mlp.c_proj.weight"].shape == (64, 16)
    bert = convert_to_hf(CLASSIFIER, str(tmp_path / "b"), progress=False)
    tensors = load_file(os.path.join(bert.out, "model.safetensors"))
    weights = read_vars(CLASSIFIER)
    assert np.array_equal(tensors["bert.encoder.layer.0.intermediate.dense.weight"],
                          weights["bert/encoder/layer_0/intermediate/dense/kernel"].T)
    assert np.array_equal(tensors["classifier.weight"], weights["output_weights"])
    config = json.load(open(os.path.join(bert.out, "config.json")))
    assert (config["hidden_act"], config["num_labels"], config["architectures"]) == (
        "gelu_new", 3, ["BertForSequenceClassification"])


def test_blocked_transposes_and_shards_give_the_same_tensors(tmp_path):
    """Past a piece, a transpose goes in blocks of output rows; past --max-shard-size, files
    are sharded with transformers' index. The tensors are the same as in one file."""
    from safetensors.numpy import load_file

    whole = convert_to_hf(CLASSIFIER, str(tmp_path / "one"), progress=False)
    parts = convert_to_hf(CLASSIFIER, str(tmp_path / "many"), progress=False,
                          max_shard_size=parse_size("8KB"), max_batch_bytes=300)
    expected = load_file(os.path.join(whole.out, "model.safetensors"))
    index = json.load(open(os.path.join(parts.out, "model.safetensors.index.json")))
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    got = {}
    for name in files:
        assert read_header(os.path.join(parts.out, name))[0]  # a header each
        got.update(load_file(os.path.join(parts.out, name)))
    assert sorted(got) == sorted(expected) == sorted(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in expected.values())
    for k, v in expected.items():
        assert v.tobytes() == got[k].tobytes(), k


def test_an_unknown_variable_is_one_line_and_nothing_is_written(tmp_path):
    src = rename_checkpoint(CLASSIFIER, [(r"^output_(weights|bias)", r"my_head/\g<1>")],
                            str(tmp_path / "r" / "model.ckpt"), progress=False).prefix
    shutil.copy(os.path.join(FIXTURES, "bert_classifier", "bert_config.json"), tmp_path / "r")
    out = tmp_path / "hf"
    r = run_cli("convert", src, "--to", "hf", "--out", str(out))
    err = assert_clean_error(r.returncode, r.stderr, 2, "my_head/bias", "my_head/weights",
                             "--rules FILE", "--drop REGEX")
    assert "2 variable(s)" in err and not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".hf")]
    # the dry run shows them among the rest, and fails the same way
    r = run_cli("convert", src, "--to", "hf", "--out", str(out), "--dry-run")
    assert r.returncode == 2 and "my_head/weights" in r.stdout and "ERROR: no rule maps it" in \
        r.stdout
    # --drop leaves them out, and says so
    r = run_cli("convert", src, "--to", "hf", "--out", str(out), "--drop", "^my_head/")
    assert r.returncode == 0, r.stderr
    assert "2 --drop ^my_head/" in r.stdout
    config = json.load(open(out / "config.json"))
    assert config["architectures"] == ["BertModel"]  # no head left: the encoder alone


def test_a_shape_the_config_does_not_give_is_one_line(tmp_path):
    prefix = _copy("bert_classifier", tmp_path / "c")
    config = json.load(open(tmp_path / "c" / "bert_config.json"))
    config["intermediate_size"] = 64
    (tmp_path / "c" / "bert_config.json").write_text(json.dumps(config))
    r = run_cli("convert", prefix, "--to", "hf", "--out", str(tmp_path / "hf"))
    assert_clean_error(r.returncode, r.stderr, 2, "'bert/encoder/layer_0/intermediate/dense/bias'"
                       " has shape [32], but bert_config.json beside the checkpoint makes it "
                       "[64] (intermediate_size)", "more variable(s) disagree")
    assert not (tmp_path / "hf").exists()


def test_a_missing_config_is_one_line(tmp_path):
    prefix = _copy("gpt2", tmp_path / "c", config=False)
    r = run_cli("convert", prefix, "--to", "hf", "--out", str(tmp_path / "hf"))
    assert_clean_error(r.returncode, r.stderr, 2, "family 'gpt2' needs n_head from its config",
                       "no hparams.json beside", "--config FILE")
    assert not (tmp_path / "hf").exists()
    r = run_cli("convert", prefix, "--to", "hf", "--out", str(tmp_path / "hf"), "--config",
                os.path.join(FIXTURES, "gpt2", "hparams.json"), "--quiet")
    assert r.returncode == 0, r.stderr


def test_generic_checkpoints_and_options_of_other_formats_are_refused(tmp_path):
    r = run_cli("convert", os.path.join(FIXTURES, "mlp", "my_model.ckpt"), "--to", "hf",
                "--out", str(tmp_path / "hf"))
    assert_clean_error(r.returncode, r.stderr, 2, "of no family with rules", "--rules FILE")
    r = run_cli("convert", GPT2, "--to", "hf", "--out", str(tmp_path / "hf"), "--torch-layout")
    assert_clean_error(r.returncode, r.stderr, 2, "--torch-layout do not apply to --to hf")
    r = run_cli("convert", GPT2, "--to", "npz", "--out", str(tmp_path / "a.npz"), "--dry-run")
    assert_clean_error(r.returncode, r.stderr, 2, "--dry-run apply to --to hf only")


def test_an_existing_output_needs_force(tmp_path):
    out = tmp_path / "hf"
    assert run_cli("convert", GPT2, "--to", "hf", "--out", str(out), "--quiet").returncode == 0
    before = (out / "model.safetensors").read_bytes()
    r = run_cli("convert", GPT2, "--to", "hf", "--out", str(out))
    assert_clean_error(r.returncode, r.stderr, 2, "exists", "--force")
    r = run_cli("convert", CLASSIFIER, "--to", "hf", "--out", str(out), "--force", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").read_bytes() != before
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors",
                                       "tokenizer_config.json", "vocab.txt"]
    assert sorted(os.listdir(tmp_path)) == ["hf"]  # no staging folder left
