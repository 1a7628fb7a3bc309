"""PEFT LoRA adapters merged at load: logits equal the ``PeftModel``'s (1e-4) for every config
PEFT offers that npformer merges; switching adapters is exact; unsupported configs are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npformer
from helpers import assert_close, make_checkpoint, random_batch
from npformer.models.auto import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

import peft
import torch

TOL = 1e-4
SMALL_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48)
SMALL_DISTILBERT = dict(dim=32, n_layers=2, n_heads=2, hidden_dim=48)
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
NER = {0: "O", 1: "B-PER", 2: "I-PER"}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_bases")
    make_checkpoint(
        root / "bert_seq",
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
        **SMALL_BERT,
    )
    make_checkpoint(
        root / "distil_tok",
        "distilbert",
        "token",
        vocab="bert-base-uncased",
        id2label=NER,
        label2id={v: k for k, v in NER.items()},
        **SMALL_DISTILBERT,
    )
    make_checkpoint(
        root / "bert_tok",
        "bert",
        "token",
        vocab="bert-base-uncased",
        id2label=NER,
        label2id={v: k for k, v in NER.items()},
        **SMALL_BERT,
    )
    return root


def make_adapter(base: Path, out: Path, task_type: str, seed: int = 0, **config) -> torch.nn.Module:
    """A PEFT adapter on ``base`` with random (non-zero) LoRA weights, trained biases and saved
    modules perturbed; saved to ``out``; returns the PeftModel (eval mode)."""
    import transformers

    cls = (
        transformers.AutoModelForSequenceClassification
        if task_type == "SEQ_CLS"
        else transformers.AutoModelForTokenClassification
    )
    model = cls.from_pretrained(base)
    torch.manual_seed(seed)
    lora = peft.LoraConfig(task_type=task_type, init_lora_weights=False, **config)
    peft_model = peft.get_peft_model(model, lora)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if p.requires_grad and ("bias" in name or "modules_to_save" in name or "magnitude" in name):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    peft_model.eval()
    peft_model.save_pretrained(out)
    return peft_model


def reference_logits(peft_model, ids, mask, types=None) -> np.ndarray:
    with torch.no_grad():
        kwargs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        if types is not None:
            kwargs["token_type_ids"] = torch.tensor(types)
        return peft_model(**kwargs).logits.numpy()


def batch(vocab_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return random_batch(rng, vocab_size, 3, 11)


CASES = {
    "plain": dict(r=4, lora_alpha=8, target_modules=["query", "value"]),
    "rslora": dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["query", "key", "value", "dense"]),
    "patterns": dict(
        r=4,
        lora_alpha=8,
        target_modules=["query", "value", "dense"],
        rank_pattern={"query": 2, "layer.1.output.dense": 6},
        alpha_pattern={"value": 32},
    ),
    "layers": dict(
        r=2, lora_alpha=4, target_modules=["query", "value", "dense"], layers_to_transform=[1], layers_pattern="layer"
    ),
    "regex": dict(r=3, lora_alpha=5, target_modules=r".*\.attention\.self\.(query|key)"),
    "bias_all": dict(r=4, lora_alpha=8, target_modules=["query", "value"], bias="all"),
    "bias_lora_only": dict(r=4, lora_alpha=8, target_modules=["key", "dense"], bias="lora_only"),
    "dora": dict(r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"], use_dora=True),
    "fan_in_fan_out": dict(r=4, lora_alpha=8, target_modules=["query"], fan_in_fan_out=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bert_sequence_classification_matches_peft(bases, tmp_path, case):
    base = bases / "bert_seq"
    peft_model = make_adapter(base, tmp_path / case, "SEQ_CLS", **CASES[case])
    ids, mask, types = batch(peft_model.config.vocab_size)
    model = AutoModelForSequenceClassification.from_pretrained(base, adapter=tmp_path / case)
    assert_close(model(ids, mask, types).logits, reference_logits(peft_model, ids, mask, types), TOL, case)


def test_lora_bias_matches_peft(bases, tmp_path):
    import inspect

    if "lora_bias" not in inspect.signature(peft.LoraConfig).parameters:
        pytest.fail("the installed peft has no lora_bias")
    peft_model = make_adapter(
        bases / "bert_seq", tmp_path / "a", "SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], lora_bias=True
    )
    ids, mask, types = batch(peft_model.config.vocab_size)
    model = AutoModelForSequenceClassification.from_pretrained(bases / "bert_seq", adapter=tmp_path / "a")
    assert_close(model(ids, mask, types).logits, reference_logits(peft_model, ids, mask, types), TOL)


@pytest.mark.parametrize(
    "base_name, targets",
    [("distil_tok", ["q_lin", "v_lin", "lin1", "lin2"]), ("bert_tok", ["query", "intermediate.dense", "output.dense"])],
)
def test_token_classification_with_modules_to_save_matches_peft(bases, tmp_path, base_name, targets):
    base = bases / base_name
    peft_model = make_adapter(base, tmp_path / "a", "TOKEN_CLS", r=4, lora_alpha=16, target_modules=targets)
    saved = peft.utils.load_peft_weights(str(tmp_path / "a")) if hasattr(peft.utils, "load_peft_weights") else {}
    assert any("classifier" in k for k in saved), "PEFT saves the classifier as a module to save"
    ids, mask, types = batch(peft_model.config.vocab_size, seed=1)
    model = AutoModelForTokenClassification.from_pretrained(base, adapter=tmp_path / "a")
    ref = reference_logits(peft_model, ids, mask, None if base_name.startswith("distil") else types)
    assert_close(model(ids, mask, types).logits, ref, TOL)


def test_switching_adapters_is_exact(bases, tmp_path):
    base = bases / "bert_seq"
    make_adapter(base, tmp_path / "a", "SEQ_CLS", seed=1, **CASES["plain"])
    make_adapter(base, tmp_path / "b", "SEQ_CLS", seed=2, **CASES["patterns"])
    ids, mask, types = batch(1000)
    ids = ids % 1000
    fresh = {
        name: AutoModelForSequenceClassification.from_pretrained(base, adapter=tmp_path / name)(ids, mask, types).logits
        for name in ("a", "b")
    }
    plain = AutoModelForSequenceClassification.from_pretrained(base)(ids, mask, types).logits
    model = AutoModelForSequenceClassification.from_pretrained(base, adapter=tmp_path / "a")
    model.load_adapter("b", tmp_path / "b")
    assert model.active_adapter == "default"
    for name, key in [("b", "b"), ("default", "a"), ("b", "b"), (None, None), ("default", "a")]:
        model.set_adapter(name)
        got = model(ids, mask, types).logits
        assert np.array_equal(got, plain if key is None else fresh[key]), name
    assert not np.array_equal(fresh["a"], fresh["b"]) and not np.array_equal(fresh["a"], plain)
    with pytest.raises(KeyError, match="no adapter named 'c'"):
        model.set_adapter("c")


def test_int8_merges_in_float32_then_quantizes(bases, tmp_path):
    base = bases / "bert_seq"
    peft_model = make_adapter(base, tmp_path / "a", "SEQ_CLS", **CASES["rslora"])
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged", safe_serialization=True)
    for name in ("vocab.txt", "tokenizer_config.json"):
        (tmp_path / "merged" / name).write_bytes((base / name).read_bytes())
    ids, mask, types = batch(1000)
    ids = ids % 1000
    ours = AutoModelForSequenceClassification.from_pretrained(base, adapter=tmp_path / "a", dtype="int8")
    reference = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged", dtype="int8")
    assert_close(ours(ids, mask, types).logits, reference(ids, mask, types).logits, 1e-5, "int8 adapted vs int8 merged")
    switched = AutoModelForSequenceClassification.from_pretrained(base, dtype="int8")
    switched.load_adapter("a", tmp_path / "a", activate=True)
    assert np.array_equal(switched(ids, mask, types).logits, ours(ids, mask, types).logits)


def test_bare_encoder_takes_an_adapter_saved_on_a_task_model(bases, tmp_path):
    base = bases / "bert_seq"
    peft_model = make_adapter(base, tmp_path / "a", "SEQ_CLS", **CASES["plain"])
    ids, mask, types = batch(1000)
    ids = ids % 1000
    encoder = AutoModel.from_pretrained(base, adapter=tmp_path / "a")
    with torch.no_grad():
        ref = peft_model.base_model.model.bert(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)
        ).last_hidden_state.numpy()
    assert_close(encoder(ids, mask, types).last_hidden_state, ref, TOL)


def test_pipeline_and_cli_take_adapters(bases, tmp_path):
    base = bases / "bert_seq"
    make_adapter(base, tmp_path / "a", "SEQ_CLS", **CASES["plain"])
    texts = ["a gorgeous film", "dull and long"]
    direct = npformer.pipeline("sentiment", base, adapter=tmp_path / "a")(texts)
    assert npformer.pipeline("sentiment", tmp_path / "a")(texts) == direct  # the config names its base
    assert direct != npformer.pipeline("sentiment", base)(texts)
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "sentiment", "--model", str(base), "--adapter", str(tmp_path / "a"), *texts],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["label"] for r in rows] == [d["label"] for d in direct]
    assert max(abs(r["score"] - d["score"]) for r, d in zip(rows, direct)) < 1e-6


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(peft_type="IA3"), "merges LoRA adapters only"),
        (dict(layer_replication=[[0, 1]]), "field 'layer_replication'"),
        (dict(r=8), "gives it r = 8"),
        (dict(target_modules=["key"]), "does not name"),
        (dict(bias="sometimes"), "field 'bias'"),
        (dict(use_dora=True), "has no lora_magnitude_vector"),
    ],
)
def test_unsupported_or_inconsistent_configs_are_refused(bases, tmp_path, change, message):
    base = bases / "bert_seq"
    make_adapter(base, tmp_path / "a", "SEQ_CLS", **CASES["plain"])
    _edit_config(tmp_path / "a", **change)
    with pytest.raises(ValueError, match=message):
        AutoModelForSequenceClassification.from_pretrained(base, adapter=tmp_path / "a")


def test_embedding_targets_and_pickles_are_refused(bases, tmp_path):
    base = bases / "bert_seq"
    make_adapter(base, tmp_path / "emb", "SEQ_CLS", r=2, lora_alpha=4, target_modules=["word_embeddings", "query"])
    with pytest.raises(ValueError, match="adapts an embedding layer"):
        AutoModelForSequenceClassification.from_pretrained(base, adapter=tmp_path / "emb")
    make_adapter(base, tmp_path / "bin", "SEQ_CLS", **CASES["plain"])
    (tmp_path / "bin" / "adapter_model.safetensors").rename(tmp_path / "bin" / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match="is a pickle"):
        AutoModelForSequenceClassification.from_pretrained(base, adapter=tmp_path / "bin")
    make_adapter(base, tmp_path / "plain", "SEQ_CLS", **CASES["plain"])
    with pytest.raises(ValueError, match="stored as I8; an adapter merges into a float checkpoint"):
        AutoModelForSequenceClassification.from_pretrained(npformer.hub.BUILTIN["builtin:sentiment"], adapter=tmp_path / "plain")


def test_trained_biases_with_lora_bias_match_peft(bases, tmp_path):
    peft_model = make_adapter(
        bases / "bert_seq",
        tmp_path / "a",
        "SEQ_CLS",
        r=4,
        lora_alpha=8,
        target_modules=["query", "value"],
        bias="lora_only",
        lora_bias=True,
    )
    ids, mask, types = batch(peft_model.config.vocab_size)
    model = AutoModelForSequenceClassification.from_pretrained(bases / "bert_seq", adapter=tmp_path / "a")
    assert_close(model(ids, mask, types).logits, reference_logits(peft_model, ids, mask, types), TOL)
