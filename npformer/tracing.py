"""``npformer.trace``: every named intermediate of one forward pass, as llm.c dumps its activations.

The encoder's own forward pass runs with a recorder (``Encoder.__call__(record=...)``). Nothing is
computed twice except the pre-softmax attention scores, which the fused attention kernel never
holds: they are derived from the recorded query and key as ``q k^T / sqrt(d_head)`` (one text has
no padding to mask). Names are
the Transformers modules that produce each value (``encoder.layer.3.attention.self.query``,
``...attention.output.LayerNorm``, ``...intermediate``, ``pooler``, ``classifier``...), so each can
be compared with a forward hook on that module (``tests/test_trace.py`` does).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npformer.models.auto import AutoModel
from npformer.models.encoder import Encoder
from npformer.models.heads import TaskModel
from npformer.pipelines.base import load_tokenizer
from npformer.tokenizer import Tokenizer


@dataclass
class TraceEntry:
    """One intermediate: its module ``name``, the ``value`` (a NumPy array, batch axis first) and
    the ``ms`` spent computing it since the previous entry."""

    name: str
    value: np.ndarray
    ms: float


@dataclass
class Trace:
    """The intermediates of one forward pass, in order, and the tokens they belong to."""

    tokens: list[str]
    entries: list[TraceEntry] = field(default_factory=list)
    layer_outputs: list[str] = field(default_factory=list)  # each layer's last module (its output)
    embedding_output: str = "embeddings"  # what the first layer reads

    def __getitem__(self, name: str) -> np.ndarray:
        """The value recorded under ``name``. Raises ``KeyError`` listing a few names."""
        for entry in self.entries:
            if entry.name == name:
                return entry.value
        raise KeyError(f"no intermediate named {name!r}; e.g. {[e.name for e in self.entries[:6]]}")

    def names(self) -> list[str]:
        """The names of the recorded intermediates, in the order the pass produced them."""
        return [e.name for e in self.entries]

    def hidden_states(self) -> list[np.ndarray]:
        """The embeddings' output, then each layer's (Transformers' ``output_hidden_states``)."""
        return [self[self.embedding_output]] + [self[name] for name in self.layer_outputs]

    def attentions(self) -> list[np.ndarray]:
        """Each layer's attention probabilities ``(batch, heads, seq, seq)`` (``output_attentions``)."""
        return [e.value for e in self.entries if e.name.partition("@")[0].endswith(".probs")]

    def table(self) -> str:
        """A text table: name, shape, dtype, mean, std, min, max and ms of every intermediate."""
        rows = [("name", "shape", "dtype", "mean", "std", "min", "max", "ms")]
        for e in self.entries:
            v = e.value.astype(np.float64)
            rows.append(
                (
                    e.name,
                    "x".join(map(str, e.value.shape)),
                    str(e.value.dtype),
                    f"{v.mean():.4g}",
                    f"{v.std():.4g}",
                    f"{v.min():.4g}",
                    f"{v.max():.4g}",
                    f"{e.ms:.2f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def trace(
    model_or_path, text: str, text_pair: str | None = None, *, tokenizer: Tokenizer | None = None, max_length: int | None = None
) -> Trace:
    """Run ``model_or_path`` (a loaded encoder or task model, or a checkpoint directory / Hub id,
    loaded as a bare encoder) on one text (or pair) and record every intermediate.

    Returns a :class:`Trace`: ``embeddings`` ``(1, seq, hidden)``; per layer ``query``/``key``/
    ``value`` ``(1, seq, hidden)``, ``scores`` and ``probs`` ``(1, heads, seq, seq)``, the attention
    context, output dense, LayerNorm, the feed-forward activation ``(1, seq, intermediate)``,
    output dense and LayerNorm; ``pooler`` (BERT); the head's logits for a task model. All float32.
    ``max_length`` (tokens) cuts the text (the pair's second text first) to that length.
    Raises ``ValueError`` for a text over the model's maximum length and as loading does.
    """
    if isinstance(model_or_path, (str, Path)):
        tokenizer = tokenizer or load_tokenizer(model_or_path)
        model_or_path = AutoModel.from_pretrained(model_or_path)
    if tokenizer is None:
        raise ValueError("a loaded model needs tokenizer= (a Tokenizer)")
    encoder: Encoder = model_or_path.encoder if isinstance(model_or_path, TaskModel) else model_or_path
    if max_length is not None:  # cut the pair's second text first, as question answering does
        enc = tokenizer(text, text_pair, truncation="only_second" if text_pair else True, max_length=max_length)
    else:
        enc = tokenizer(text, text_pair)
    if enc["input_ids"].shape[1] > encoder.config.max_length:
        raise ValueError(
            f"the text has {enc['input_ids'].shape[1]} tokens, over the model's maximum of {encoder.config.max_length}"
        )
    result = Trace(
        tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist()),
        layer_outputs=encoder.layer_output_names(),
        embedding_output=encoder.embedding_output_name,
    )
    clock = [time.perf_counter()]

    def record(name: str, value: np.ndarray) -> None:
        now = time.perf_counter()
        result.entries.append(TraceEntry(name, np.array(value, dtype=np.float32), 1e3 * (now - clock[0])))
        clock[0] = time.perf_counter()

    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")
    out = encoder(ids, mask, types, record=record)
    _add_scores(result, encoder)
    if isinstance(model_or_path, TaskModel):
        clock[0] = time.perf_counter()
        logits = model_or_path.head(out.last_hidden_state, out.pooler_output)
        record(next(iter(model_or_path.head_tensors), "head").rsplit(".", 1)[0], logits)
    return result


def _add_scores(result: Trace, encoder: Encoder) -> None:
    """Insert each layer's pre-softmax scores before its probabilities (derived from q and k)."""
    heads = encoder.config.num_attention_heads
    entries = []
    for e in result.entries:
        name, at, call = e.name.partition("@")  # "@1": a shared block's second run (ALBERT)
        if name.endswith(".probs") and not any(
            x.name == name[: -len(".probs")] + ".scores" + at + call for x in entries
        ):  # unless the block recorded them
            base = name[: -len(".probs")]
            q, k = _by_suffix(entries, base, "query", "q_lin", "q"), _by_suffix(entries, base, "key", "k_lin", "k")
            b, s, h = q.shape
            d = h // heads
            qh = q.reshape(b, s, heads, d).transpose(0, 2, 1, 3).astype(np.float64)
            kh = k.reshape(b, s, heads, d).transpose(0, 2, 1, 3).astype(np.float64)
            scores = (qh @ kh.transpose(0, 1, 3, 2) / math.sqrt(d)).astype(np.float32)
            if hasattr(encoder, "position_bias"):  # a relative position bias (MPNet) is part of the scores
                scores += encoder.position_bias(s)
            entries.append(TraceEntry(base + ".scores" + at + call, scores, 0.0))
        entries.append(e)
    result.entries = entries


def _by_suffix(entries: list[TraceEntry], base: str, *suffixes: str) -> np.ndarray:
    for e in reversed(entries):
        if e.name.startswith(base) and e.name.partition("@")[0].rsplit(".", 1)[-1] in suffixes:
            return e.value
    raise KeyError(f"no query/key recorded under {base}")
