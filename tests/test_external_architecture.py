"""An architecture added from outside ``npformer/``: ``tests/plugins/prelnbert_plugin.py`` registers a
pre-LN BERT through the ``npformer.architectures`` entry point, and it runs through AutoModel,
the pipelines, the CLI, ``serve``, ``trace`` and ``quantize`` with no other file touched. The
reference is the pre-LN forward pass written below in torch over the same random-init tensors
(a BERT checkpoint saved by Transformers plus a final LayerNorm); tolerance 1e-4."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npformer
from conftest import read_sst2
from helpers import SENTIMENT_LABELS, install_plugin, make_checkpoint
from npformer.cli import main
from npformer.convert import save_quantized
from test_server import Client, free_port, start, stop

import torch

TOL = 1e-4
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """A directory that installs the plugin for any process with it on its path: the module and
    a ``.dist-info`` naming it as an ``npformer.architectures`` entry point."""
    with install_plugin(tmp_path_factory.mktemp("plugin"), "prelnbert_plugin", "npformer.architectures", "prelnbert") as root:
        yield root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, plugin) -> Path:
    directory = tmp_path_factory.mktemp("prelnbert")
    make_checkpoint(
        directory,
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        init_std=0.2,
        id2label=SENTIMENT_LABELS,
        label2id={v: k for k, v in SENTIMENT_LABELS.items()},
        **SIZES,
    )
    tensors = load_file(directory / "model.safetensors")
    rng = np.random.default_rng(7)
    tensors["bert.encoder.final_layer_norm.weight"] = (1 + 0.2 * rng.standard_normal(32)).astype(np.float32)
    tensors["bert.encoder.final_layer_norm.bias"] = (0.1 * rng.standard_normal(32)).astype(np.float32)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    config.update(model_type="prelnbert", architectures=["PreLNBertForSequenceClassification"])
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def reference(directory: Path, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """The pre-LN forward pass in torch: ``(last_hidden_state, logits, hidden_states)``."""
    config = json.loads((directory / "config.json").read_text())
    t = {k.removeprefix("bert."): torch.tensor(v) for k, v in load_file(directory / "model.safetensors").items()}
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]

    def norm(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], t[f"{name}.weight"], t[f"{name}.bias"], eps)

    def dense(x, name):
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    ids, mask = torch.tensor(ids), torch.tensor(mask)
    batch, seq = ids.shape
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][:seq]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = norm(x, "embeddings.LayerNorm")
    hidden = [x]
    bias = (1 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    d = x.shape[-1] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        h = norm(x, p + "attention.output.LayerNorm")
        q, k, v = (
            dense(h, p + f"attention.self.{n}").view(batch, seq, heads, d).transpose(1, 2) for n in ("query", "key", "value")
        )
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(batch, seq, -1)
        x = x + dense(context, p + "attention.output.dense")
        h = norm(x, p + "output.LayerNorm")
        x = x + dense(torch.nn.functional.gelu(dense(h, p + "intermediate.dense")), p + "output.dense")
        hidden.append(x)
    x = norm(x, "encoder.final_layer_norm")
    logits = dense(torch.tanh(dense(x[:, 0], "pooler.dense")), "classifier")
    return x.numpy(), logits.detach().numpy(), [h.numpy() for h in hidden]


def texts() -> list[str]:
    return read_sst2("dev")[0][:12] + ["a fine film"]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_automodel_and_head_equal_the_reference(checkpoint, backend):
    tok = npformer.Tokenizer.from_pretrained(checkpoint)
    enc = tok(texts(), padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    last, logits, _ = reference(checkpoint, ids, mask)
    encoder = npformer.AutoModel.from_pretrained(checkpoint, backend=backend)
    assert type(encoder).__name__ == "PreLNBertModel"
    out = encoder(ids, mask, enc["token_type_ids"])
    real = mask.astype(bool)
    np.testing.assert_allclose(out.last_hidden_state[real], last[real], atol=TOL)
    model = npformer.AutoModelForSequenceClassification.from_pretrained(checkpoint, backend=backend)
    np.testing.assert_allclose(model(ids, mask, enc["token_type_ids"]).logits, logits, atol=TOL)


def test_pipeline_and_cli_in_a_fresh_process(checkpoint, plugin, capsys):
    tok = npformer.Tokenizer.from_pretrained(checkpoint)
    expected = []
    for text in texts():
        enc = tok(text)
        _, logits, _ = reference(checkpoint, enc["input_ids"], enc["attention_mask"])
        p = np.exp(logits[0] - logits[0].max())
        expected.append((SENTIMENT_LABELS[int(p.argmax())], float(p.max() / p.sum())))
    got = npformer.pipeline("sentiment", checkpoint)(texts())
    assert [g["label"] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose([g["score"] for g in got], [e[1] for e in expected], atol=TOL)
    env = dict(os.environ, PYTHONPATH=str(plugin), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "sentiment", "--model", str(checkpoint), *texts()],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["label"] for r in rows] == [g["label"] for g in got]
    np.testing.assert_allclose([r["score"] for r in rows], [g["score"] for g in got], atol=1e-6)
    assert main(["info", str(checkpoint)]) == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == "prelnbert"


def test_serve(checkpoint, plugin):
    port = free_port()
    proc = start(["--model", f"preln={checkpoint}"], port, pythonpath=plugin)
    try:
        answer = Client(port).ok("/predict", {"inputs": texts()[0]})
        reference_scores = npformer.pipeline("sentiment", checkpoint)(texts()[0], top_k=None)
        assert [a["label"] for a in answer] == [r["label"] for r in reference_scores]
        np.testing.assert_allclose([a["score"] for a in answer], [r["score"] for r in reference_scores], atol=1e-6)
    finally:
        assert stop(proc) == 0


def test_trace(checkpoint):
    model = npformer.AutoModelForSequenceClassification.from_pretrained(checkpoint)
    tok = npformer.Tokenizer.from_pretrained(checkpoint)
    t = npformer.trace(model, "a gorgeous, witty film", tokenizer=tok)
    enc = tok("a gorgeous, witty film")
    last, logits, hidden = reference(checkpoint, enc["input_ids"], enc["attention_mask"])
    assert "encoder.layer.1.attention.self.query" in t.names() and "encoder.final_layer_norm" in t.names()
    assert len(t.attentions()) == 2 and t.attentions()[0].shape == (1, 4, 7, 7)
    for ours, theirs in zip(t.hidden_states(), hidden, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=TOL)
    np.testing.assert_allclose(t["encoder.final_layer_norm"], last, atol=TOL)
    np.testing.assert_allclose(t["classifier"], logits, atol=TOL)


def test_quantize(checkpoint, tmp_path, capsys):
    out = save_quantized(checkpoint, tmp_path / "int8")
    assert main(["info", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dtype"] == "int8" and shown["model_type"] == "prelnbert"
    float32 = npformer.pipeline("sentiment", checkpoint)(texts(), top_k=None)
    int8 = npformer.pipeline("sentiment", out)(texts(), top_k=None)
    assert npformer.pipeline("sentiment", out).model.encoder.dtype == "int8"
    for f, q in zip(float32, int8, strict=True):  # int8 activations and weights: within a few hundredths
        assert abs(f[0]["score"] - {d["label"]: d["score"] for d in q}[f[0]["label"]]) < 0.05


def test_an_unknown_model_type_is_refused_by_name(checkpoint, tmp_path):
    shutil.copytree(checkpoint, tmp_path / "other")
    config = json.loads((tmp_path / "other" / "config.json").read_text())
    (tmp_path / "other" / "config.json").write_text(json.dumps({**config, "model_type": "funnel"}))
    with pytest.raises(
        ValueError,
        match=r"unknown model_type 'funnel': npformer supports albert \(ALBERT\), bert "
        r"\(BERT, TinyBERT, MiniLM\), camembert \(CamemBERT\), distilbert "
        r"\(DistilBERT\), electra \(ELECTRA\), modernbert \(ModernBERT\), mpnet \(MPNet\), "
        r"prelnbert.*"
        r"roberta \(RoBERTa\), xlm-roberta \(XLM-RoBERTa\) "
        r"\(the table: https://\S+#supported-models\)$",
    ):
        npformer.AutoModel.from_pretrained(tmp_path / "other")
