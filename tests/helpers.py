"""Random-init Transformers checkpoints for cross-checking (the tinygrad test_bert.py pattern)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from numba import njit

from conftest import VOCABS, require

# Transformers class names per (model_type, head)
CLASSES = {
    ("bert", None): "BertModel",
    ("bert", "sequence"): "BertForSequenceClassification",
    ("bert", "token"): "BertForTokenClassification",
    ("bert", "qa"): "BertForQuestionAnswering",
    ("bert", "mlm"): "BertForMaskedLM",
    ("distilbert", None): "DistilBertModel",
    ("distilbert", "sequence"): "DistilBertForSequenceClassification",
    ("distilbert", "token"): "DistilBertForTokenClassification",
    ("distilbert", "qa"): "DistilBertForQuestionAnswering",
    ("distilbert", "mlm"): "DistilBertForMaskedLM",
}


def make_checkpoint(directory: Path, model_type: str, head: str | None = None, *, seed: int = 0,
                    vocab: str | None = None, init_std: float = 0.1, **config_kwargs):
    """Save a random-init Transformers model (safetensors) to ``directory``; returns the torch model.

    ``vocab`` names a folder of ../shared/vocab whose vocab.txt and tokenizer_config.json are copied
    (then vocab_size follows it). Weights get a larger spread than Transformers' default (0.02) so
    that activations exercise the kernels' ranges; layer norm weights are randomized too.
    """
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if vocab is not None:
        src = require(VOCABS / vocab)
        shutil.copy(src / "vocab.txt", directory / "vocab.txt")
        tok_config = json.loads((src / "tokenizer_config.json").read_text())
        if model_type == "distilbert":  # DistilBERT's tokenizer returns no token_type_ids
            tok_config["tokenizer_class"] = "DistilBertTokenizer"
        (directory / "tokenizer_config.json").write_text(json.dumps(tok_config))
        config_kwargs["vocab_size"] = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    config_cls = transformers.BertConfig if model_type == "bert" else transformers.DistilBertConfig
    config = config_cls(**config_kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, CLASSES[(model_type, head)])(config)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                p.copy_((1.0 + 0.2 * torch.randn(p.shape, generator=gen)) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 1 and "position_embeddings" not in name or not getattr(config, "sinusoidal_pos_embds", False):
                p.copy_(init_std * torch.randn(p.shape, generator=gen))
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return model


SENTIMENT_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def make_sentiment_checkpoint(directory: Path, num_hidden_layers: int = 1) -> Path:
    """A tiny random-init BERT sequence classifier with NEGATIVE / POSITIVE labels and the uncased vocab."""
    make_checkpoint(directory, "bert", "sequence", vocab="bert-base-uncased", hidden_size=32,
                    num_hidden_layers=num_hidden_layers, num_attention_heads=2, intermediate_size=40,
                    id2label=SENTIMENT_LABELS, label2id={v: k for k, v in SENTIMENT_LABELS.items()})
    return Path(directory)


def random_batch(rng: np.random.Generator, vocab_size: int, batch: int, seq: int, type_vocab: int = 2):
    """``(input_ids, attention_mask, token_type_ids)`` int64 ``(batch, seq)`` with ragged padding."""
    ids = rng.integers(5, vocab_size, size=(batch, seq))
    lengths = rng.integers(max(1, seq // 3), seq + 1, size=batch)
    lengths[0] = seq
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    types = np.zeros((batch, seq), dtype=np.int64)
    if type_vocab > 1:
        for b, n in enumerate(lengths):
            types[b, n // 2:n] = 1
    return ids, mask, types


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def assert_close(ours, reference, tol: float, what: str = "result") -> float:
    """Parity check that says what it saw: fails with the max abs diff, where it is and both values;
    returns the max abs diff (printed, so a passing run shows the margin too)."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs reference {b.shape}"
    diff = np.abs(a - b)
    worst = float(diff.max()) if diff.size else 0.0
    print(f"{what}: max abs diff {worst:.2e} (tolerance {tol:.0e})")
    if not worst <= tol:
        at = np.unravel_index(int(np.nanargmax(diff)), diff.shape)
        raise AssertionError(f"{what}: max abs diff {worst:.3e} > {tol:.0e} at {tuple(int(i) for i in at)} "
                             f"(ours {a[at]:.6g}, reference {b[at]:.6g})")
    return worst


def fresh_asm(kernel, *args) -> str:
    """Assembly of ``kernel``'s source compiled anew (a cache-loaded dispatcher keeps no assembly)."""
    fresh = njit(fastmath=True)(kernel.py_func)  # serial: the parallel launcher hides the loop body
    fresh(*args)
    return "".join(fresh.inspect_asm(sig) for sig in fresh.signatures)
