"""The built-in INT8 sentiment model: offline, small, right on clear cases, equal to Transformers in float32."""

from __future__ import annotations

import json

import numpy as np

from conftest import read_sst2
from helpers import float32_checkpoint
from npformer.cli import main
from npformer.pipelines import BUILTIN_SENTIMENT

import npformer

CLEAR = [
    ("This movie was absolutely wonderful, I loved every minute of it.", "POSITIVE"),
    ("A brilliant, moving and beautifully acted film.", "POSITIVE"),
    ("One of the best films of the year.", "POSITIVE"),
    ("A dull, boring and painfully bad film.", "NEGATIVE"),
    ("The worst movie I have ever seen; a complete waste of time.", "NEGATIVE"),
    ("The plot is a mess and the acting is terrible.", "NEGATIVE"),
]


def test_builtin_model_is_shipped_int8_and_small():
    weights = BUILTIN_SENTIMENT / "model.safetensors"
    assert weights.is_file(), "the built-in model is missing from the package"
    assert weights.stat().st_size <= 25 * 2**20
    assert (BUILTIN_SENTIMENT / "README.md").is_file()
    config = json.loads((BUILTIN_SENTIMENT / "config.json").read_text())
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}


def test_builtin_pipeline_offline_on_clear_sentences():
    pipe = npformer.pipeline("sentiment-analysis")
    assert pipe.model.encoder.dtype == "int8"
    out = pipe([text for text, _ in CLEAR])
    assert [o["label"] for o in out] == [label for _, label in CLEAR]
    assert all(o["score"] > 0.8 for o in out)


def test_builtin_cli_without_model(capsys):
    assert main(["sentiment", CLEAR[0][0], CLEAR[3][0]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["POSITIVE", "NEGATIVE"]


def test_builtin_accuracy_on_sst2_dev_is_the_model_card_s(capsys):
    """Every SST-2 dev sentence; the card's machine-readable metadata (what `npformer info` shows)
    states the licence, the base model and this accuracy."""
    texts, labels = read_sst2("dev")
    out = npformer.pipeline("sentiment-analysis", batch_size=32)(texts)
    accuracy = np.mean([(o["label"] == "POSITIVE") == bool(y) for o, y in zip(out, labels)])
    assert main(["info", "builtin:sentiment"]) == 0
    card = json.loads(capsys.readouterr().out)["model_card"]
    assert card["license"] == "apache-2.0" and card["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert card["pipeline_tag"] == "text-classification" and card["language"] == ["en"]
    stated = card["model-index"][0]["results"][0]["metrics"][0]
    assert stated["type"] == "accuracy"
    # one sentence is 0.11%: the ISA paths' int8 roundings may flip a borderline sentence or two
    assert abs(accuracy - stated["value"]) <= 0.0025, (accuracy, stated)


def test_float32_model_matches_transformers_and_int8_agrees(tmp_path):
    """The trained model's float32 graph equals Transformers' (<= 1e-4 on logits), and the shipped
    INT8 model predicts the same labels on SST-2 dev sentences with logits close to float32's."""
    import torch
    import transformers

    directory = float32_checkpoint(tmp_path)
    texts = read_sst2("dev")[0][:64]
    tok = npformer.Tokenizer.from_pretrained(directory)
    enc = tok(texts, padding=True)
    ours = npformer.AutoModelForSequenceClassification.from_pretrained(directory)(
        enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    ).logits
    ref = transformers.BertForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = ref(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    int8 = npformer.AutoModelForSequenceClassification.from_pretrained(BUILTIN_SENTIMENT)(
        enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    ).logits
    agreement = np.mean(int8.argmax(-1) == ours.argmax(-1))
    print(
        f"{directory.name}: max abs logit diff vs Transformers {np.abs(ours - expected).max():.2e}; "
        f"int8 vs float32: agreement {agreement:.3f}, max abs logit diff {np.abs(int8 - ours).max():.3f}"
    )
    assert np.abs(ours - expected).max() <= 1e-4
    assert agreement >= 0.95
    assert np.abs(int8 - ours).max() <= 0.5
