"""Sentence embeddings of the real all-MiniLM-L6-v2 against Transformers + sentence-transformers' pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_stsb
from helpers import assert_close, make_checkpoint
from npformer.models.pooling import Pooling

import npformer

import torch
import transformers


def reference_embeddings(directory, sentences, max_length=256):
    """sentence-transformers' recipe written out: mean pooling over real tokens, then L2 norm."""
    tok = transformers.BertTokenizerFast.from_pretrained(directory)
    model = transformers.BertModel.from_pretrained(directory).eval()
    enc = tok(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def test_minilm_sentence_embeddings_match(minilm_dir):
    s1, s2, _ = read_stsb()
    sentences = s1[:200] + s2[:200]
    pipe = npformer.pipeline("sentence-embeddings", minilm_dir, batch_size=32)
    assert pipe.pooling == Pooling(("mean",), True, 256)
    ours = pipe(sentences)
    expected = reference_embeddings(minilm_dir, sentences)
    assert ours.dtype == np.float32
    assert_close(ours, expected, 1e-4, "normalized embeddings")
    # cosine similarities against the reference vectors' (float64), every pair
    assert_close(pipe.similarity(s1[:5], s2[:5]), expected[:5] @ expected[200:205].T, 1e-4, "similarity matrix")


@pytest.mark.parametrize("modes", [("cls",), ("max",), ("mean_sqrt_len",), ("cls", "mean")])
def test_pooling_modes(tmp_path, modes):
    make_checkpoint(
        tmp_path,
        "bert",
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (tmp_path / "1_Pooling").mkdir()
    keys = {
        "cls": "pooling_mode_cls_token",
        "max": "pooling_mode_max_tokens",
        "mean": "pooling_mode_mean_tokens",
        "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    }
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({keys[m]: True for m in modes}))
    pipe = npformer.pipeline("sentence-embeddings", tmp_path)
    texts = ["a short one", "a somewhat longer sentence with more words in it"]
    got = pipe(texts)
    tok = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = transformers.BertModel.from_pretrained(tmp_path).eval()(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    parts = {
        "cls": h[:, 0],
        "max": torch.where(m > 0, h, torch.tensor(-1e9)).max(1).values,
        "mean": (h * m).sum(1) / m.sum(1),
        "mean_sqrt_len": (h * m).sum(1) / m.sum(1).sqrt(),
    }
    expected = torch.cat([parts[k] for k in modes], dim=-1).numpy()
    assert_close(got, expected, 1e-4, f"pooling {modes}")


def test_zero_shot_is_similarity_based(minilm_dir):
    pipe = npformer.pipeline("zero-shot-classification", minilm_dir)
    out = pipe("The striker scored twice in the second half.", ["football", "cooking", "finance"])
    assert out["labels"][0] == "football"
    assert abs(sum(out["scores"]) - 1.0) < 1e-6
    # multi-label: each label's score is the raw cosine of the text and its hypothesis, as documented
    text, labels = "The striker scored twice.", ["football", "cooking"]
    multi = pipe(text, labels, multi_label=True)
    vectors = reference_embeddings(minilm_dir, [text] + [f"This example is {label}." for label in labels])
    expected = {label: float(vectors[0] @ vectors[1 + i]) for i, label in enumerate(labels)}
    assert multi["labels"] == sorted(labels, key=expected.get, reverse=True)
    assert_close(multi["scores"], [expected[label] for label in multi["labels"]], 1e-4, "multi-label scores")
    with pytest.raises(ValueError, match="candidate label"):
        pipe("text", [])
