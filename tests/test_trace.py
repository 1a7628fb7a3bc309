"""``npformer.trace``: the recorded intermediates equal Transformers' hidden states and attentions
and forward hooks on the matching torch modules (1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

import npformer
from helpers import assert_close, make_checkpoint
from npformer.models.auto import AutoModelForSequenceClassification
from npformer.tracing import trace

import torch

TOL = 1e-4
TEXT = "the quick brown fox jumps over the lazy dog"


@pytest.mark.parametrize(
    "model_type, kwargs",
    [
        ("bert", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)),
        ("distilbert", dict(dim=32, n_layers=2, n_heads=4, hidden_dim=40)),
        ("roberta", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)),
        ("electra", dict(hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)),
        ("mpnet", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)),
        (
            "albert",
            dict(hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40),
        ),  # one block run twice: its second run traced as name@1
    ],
)
def test_trace_equals_transformers_and_hooks(tmp_path, model_type, kwargs):
    torch_model = make_checkpoint(tmp_path, model_type, "sequence", vocab="bert-base-uncased", **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    tok = npformer.Tokenizer.from_pretrained(tmp_path)
    t = trace(model, TEXT, tokenizer=tok)
    enc = tok(TEXT)
    feeds = {"input_ids": torch.tensor(enc["input_ids"]), "attention_mask": torch.tensor(enc["attention_mask"])}
    hooked = {}
    modules = dict(torch_model.named_modules())
    prefix = type(model.encoder).prefix
    wanted = [n for n in t.names() if prefix + n in modules]

    def first_call(name):  # a module that runs several times (ALBERT's shared block): its first run
        def hook(module, args, out):
            hooked.setdefault(name, (out[0] if isinstance(out, tuple) else out).detach().numpy())

        return hook

    handles = [modules[prefix + n].register_forward_hook(first_call(n)) for n in wanted]
    with torch.no_grad():
        ref = torch_model(**feeds, output_hidden_states=True, output_attentions=True)
    for h in handles:
        h.remove()
    assert len(t.hidden_states()) == len(ref.hidden_states) == kwargs.get("num_hidden_layers", kwargs.get("n_layers")) + 1
    for i, (ours, theirs) in enumerate(zip(t.hidden_states(), ref.hidden_states, strict=True)):
        assert_close(ours, theirs.numpy(), TOL, f"hidden state {i}")
    for i, (ours, theirs) in enumerate(zip(t.attentions(), ref.attentions, strict=True)):
        assert_close(ours, theirs.numpy(), TOL, f"attention {i}")
    suffixes = {n.rsplit(".", 1)[-1] for n in wanted}
    assert {"query", "key", "value"} <= suffixes or {"q_lin", "k_lin", "v_lin"} <= suffixes or {"q", "k", "v"} <= suffixes
    assert any(n.endswith(("intermediate", "ffn.activation", "albert_layers.0.activation")) for n in wanted), wanted
    assert any(n.endswith(("output.dense", "ffn.lin2", "ffn_output")) for n in wanted), wanted
    for n in wanted:
        assert_close(t[n], hooked[n], TOL, n)
    assert_close(t[t.names()[-1]], ref.logits.numpy(), TOL, "logits")
    probs = t.attentions()[0]
    scores = t[t.names()[t.names().index(next(n for n in t.names() if n.endswith(".probs"))) - 1]]
    e = np.exp(scores - scores.max(-1, keepdims=True))
    assert_close(e / e.sum(-1, keepdims=True), probs, 1e-5, "softmax of the recorded scores")


def test_table_lists_every_intermediate(tmp_path):
    make_checkpoint(
        tmp_path,
        "bert",
        None,
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    t = trace(tmp_path, "hello world")
    table = t.table().splitlines()
    assert table[0].split()[:4] == ["name", "shape", "dtype", "mean"]
    assert len(table) == len(t.entries) + 1
    assert t.tokens == ["[CLS]", "hello", "world", "[SEP]"]
    assert "encoder.layer.0.attention.self.scores" in t.names() and t["embeddings"].shape == (1, 4, 32)
    with pytest.raises(KeyError, match="no intermediate named"):
        t["nowhere"]


@pytest.mark.parametrize("head", ["sequence", "mlm"])
def test_modernbert_trace_equals_transformers_hooks(tmp_path, head):
    """ModernBERT's intermediates under its modules' names (``layers.{i}.attn.Wqkv``, ``.attn``,
    ``.mlp.Wi``, ``.mlp.act``, ``.mlp``, ``final_norm``...), a global and a local layer, equal to
    forward hooks on Transformers' modules; hidden states, attentions and logits too."""
    torch_model = make_checkpoint(
        tmp_path,
        "modernbert",
        head,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        local_attention=4,
        global_attn_every_n_layers=2,
    )
    loader = AutoModelForSequenceClassification if head == "sequence" else npformer.AutoModelForMaskedLM
    model = loader.from_pretrained(tmp_path)
    tok = npformer.Tokenizer.from_pretrained(tmp_path)
    t = trace(model, TEXT, tokenizer=tok)
    modules = dict(torch_model.named_modules())
    wanted = [n for n in t.names() if "model." + n in modules]
    assert {
        "layers.1.attn_norm",
        "layers.0.attn.Wqkv",
        "layers.1.attn",
        "layers.0.mlp.Wi",
        "layers.1.mlp.act",
        "layers.0.mlp",
        "layers.1",
        "final_norm",
    } <= set(wanted), wanted
    hooked = {}

    def hook(name):
        def keep(module, args, out):
            hooked.setdefault(name, (out[0] if isinstance(out, tuple) else out).numpy())

        return keep

    handles = [modules["model." + n].register_forward_hook(hook(n)) for n in wanted]
    enc = tok(TEXT)
    with torch.no_grad():
        ref = torch_model(
            input_ids=torch.tensor(enc["input_ids"]),
            attention_mask=torch.tensor(enc["attention_mask"]),
            output_hidden_states=True,
            output_attentions=True,
        )
    for h in handles:
        h.remove()
    for n in wanted:
        assert_close(t[n], hooked[n], TOL, n)
    for i, (ours, theirs) in enumerate(zip(t.hidden_states(), ref.hidden_states, strict=True)):
        assert_close(ours, theirs.numpy(), TOL, f"hidden state {i}")
    for i, (ours, theirs) in enumerate(zip(t.attentions(), ref.attentions, strict=True)):
        assert_close(ours, theirs.numpy(), TOL, f"attention {i}")
    assert t.names()[-1] == ("classifier" if head == "sequence" else "decoder")
    assert_close(t[t.names()[-1]], ref.logits.numpy(), TOL, "logits")
