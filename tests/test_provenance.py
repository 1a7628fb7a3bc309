"""Provenance: `npformer info` shows the model card, Hub commit and sentence-transformers settings;
`npformer quantize` writes a card saying what it did; `builtin:sentiment` names the shipped model."""

from __future__ import annotations

import json

from huggingface_hub.repocard import metadata_load

import npformer
from helpers import make_sentiment_checkpoint
from npformer.cli import main

CARD = """---
license: mit
language: en
datasets:
- glue
pipeline_tag: text-classification
---

# A tiny sentiment model

Trained on nothing at all.
"""


def info(capsys, *argv) -> dict:
    assert main(["info", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_of_minilm(minilm_dir, capsys):
    shown = info(capsys, str(minilm_dir))
    assert shown["sentence_transformers"] == {"pooling": ["mean"], "normalize": True, "max_seq_length": 256}
    assert shown["model_card"]["license"] == "apache-2.0"
    assert shown["model_card"]["pipeline_tag"] == "sentence-similarity"
    assert shown["hub_commit"] is None and "encoder" in shown["notes"]["encoder_parameters"]


def test_info_names_the_hub_commit(tmp_path, capsys):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / commit
    make_sentiment_checkpoint(snapshot)
    assert info(capsys, str(snapshot))["hub_commit"] == commit


def test_quantize_writes_a_card(tmp_path, capsys):
    src = make_sentiment_checkpoint(tmp_path / "src")
    (src / "README.md").write_text(CARD)
    out = tmp_path / "int8"
    assert main(["quantize", str(src), str(out)]) == 0
    capsys.readouterr()
    card = (out / "README.md").read_text()
    assert metadata_load(out / "README.md")["license"] == "mit"  # the source's terms carry over
    assert f"npformer {npformer.__version__}" in card and str(src) in card
    assert f"{(out / 'model.safetensors').stat().st_size:,} bytes" in card
    assert "Trained on nothing at all." in card
    shown = info(capsys, str(out))
    assert shown["dtype"] == "int8" and shown["model_card"]["datasets"] == ["glue"]
    assert oct((out / "README.md").stat().st_mode & 0o077) != "0o0"  # readable by others, as open() makes files


def test_broken_card_is_one_line(tmp_path, capsys):
    src = make_sentiment_checkpoint(tmp_path / "src")
    (src / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    assert main(["info", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "README.md" in err and "not valid YAML" in err


def test_builtin_is_a_model_name(capsys):
    shown = info(capsys, "builtin:sentiment")
    assert shown["name"] == "builtin:sentiment" and shown["dtype"] == "int8"
    assert main(["sentiment", "--model", "builtin:sentiment", "a wonderful, moving film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "POSITIVE"
    assert npformer.pipeline("sentiment", "builtin:sentiment")("an awful film")[0]["label"] == "NEGATIVE"
