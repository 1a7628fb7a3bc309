"""Task heads on top of an encoder, loaded from the checkpoints Transformers writes.

Each head is a small function of the encoder's hidden states (dropout is the identity at
inference). Key names follow Transformers' ``*For*`` classes:

* sequence classification: BERT ``pooler`` -> ``classifier``; DistilBERT ``pre_classifier`` ->
  ReLU -> ``classifier``; RoBERTa ``classifier.dense`` -> tanh -> ``classifier.out_proj``, on the
  first token;
* token classification: ``classifier`` on every token;
* question answering: ``qa_outputs`` -> start / end logits;
* masked LM: BERT ``cls.predictions.transform.{dense,LayerNorm}`` -> decoder tied to the word
  embeddings + ``cls.predictions.bias``; DistilBERT ``vocab_transform`` -> ``vocab_layer_norm``
  -> ``vocab_projector`` (tied) + bias; RoBERTa ``lm_head.dense`` -> GELU -> ``lm_head.layer_norm``
  -> ``lm_head.decoder`` (tied) + ``lm_head.bias``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npformer.config import Config
from npformer import kernels
from npformer.adapters import Adaptable
from npformer.models.encoder import Encoder, converted
from npformer.models.outputs import OutputAccess
from npformer.weights import Weights


def _dense(encoder: Encoder, weights: Weights, name: str, out_dim: int | None, in_dim: int):
    """``(weight, bias)`` of a head's dense layer, the weight as the encoder's backend multiplies it
    (:meth:`Encoder.packed`)."""
    w = weights.get(f"{name}.weight", None if out_dim is None else (out_dim, in_dim))
    b = weights.get(f"{name}.bias", (w.shape[0],))
    return encoder.packed(w), b


def _check_labels(config: Config, w, name: str) -> None:
    """``id2label`` must name one label per row of the classifier."""
    if config.id2label and len(config.id2label) != w.shape[0]:
        raise ValueError(
            f"{config.source}: id2label names {len(config.id2label)} labels but tensor "
            f"'{name}.weight' has {w.shape[0]} rows, one per label"
        )


@dataclass
class ModelOutput(OutputAccess):
    """``logits``: ``(batch, num_labels)`` (sequence), ``(batch, seq_len, num_labels)`` (token),
    ``(batch, seq_len, 2)`` (QA: start, end) or ``(batch, n_positions, vocab_size)`` (masked LM),
    float32; ``last_hidden_state`` ``(batch, seq_len, hidden_size)`` float32."""

    logits: np.ndarray
    last_hidden_state: np.ndarray

    @property
    def start_logits(self) -> np.ndarray:
        return self.logits[..., 0]

    @property
    def end_logits(self) -> np.ndarray:
        return self.logits[..., 1]


class TaskModel(Adaptable):
    """An encoder plus one task head. Call with ``(batch, seq_len)`` int arrays.

    ``config.id2label`` names the classes of classification heads. Load one with the matching
    ``AutoModelFor*`` class of :mod:`npformer.models.auto`; building from ``(encoder, weights)``
    raises ``KeyError`` naming a missing head tensor and ``ValueError`` for a mis-shaped one.
    """

    task: str = ""
    head_tensors: dict[str, str] = {}  # the head's checkpoint names -> attributes (for adapters)

    def __init__(self, encoder: Encoder, weights: Weights):
        self.encoder = encoder
        self.config: Config = encoder.config
        self.load_head(weights)

    def load_head(self, weights: Weights) -> None:
        """Read the head's tensors from ``weights`` (names as Transformers' ``*For*`` classes).
        Raises ``KeyError`` naming a missing tensor and ``ValueError`` for a mis-shaped one."""
        raise NotImplementedError

    def head(self, hidden: np.ndarray, pooled: np.ndarray | None, **kwargs) -> np.ndarray:
        """``hidden (batch, seq_len, hidden_size) float32`` and ``pooled (batch, hidden_size)`` (BERT's
        pooler, else None) -> the task's logits, float32 (shapes in :class:`ModelOutput`)."""
        raise NotImplementedError

    def replace_tensor(self, name: str, value: np.ndarray) -> None:
        """Set checkpoint tensor ``name`` (head names as ``classifier.weight``; encoder names without
        the architecture prefix) to ``value``, stored as loading stored it (see
        :meth:`Encoder.replace_tensor`)."""
        attribute = self.head_tensors.get(name)
        if attribute is None:
            self.encoder.replace_tensor(name, value)
        elif getattr(self, attribute, None) is None:
            raise KeyError(f"the model has no tensor {name!r}")
        else:
            setattr(self, attribute, converted(getattr(self, attribute), value, name))

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs) -> ModelOutput:
        """Encoder then head; keyword arguments go to the head (e.g. ``positions`` for masked LM)."""
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        return ModelOutput(self.head(out.last_hidden_state, out.pooler_output, **kwargs), out.last_hidden_state)

    @property
    def num_parameters(self) -> int:
        held = (np.ndarray,) if self.encoder.backend == "numpy" else (np.ndarray, kernels.gemm_f32.PackedMatrix)
        return self.encoder.num_parameters + int(sum(int(np.prod(a.shape)) for a in vars(self).values() if isinstance(a, held)))


class SequenceClassifier(TaskModel):
    """``logits (batch, num_labels)``: BERT pooler -> classifier; DistilBERT pre_classifier -> ReLU ->
    classifier; RoBERTa ``classifier.dense`` -> tanh -> ``classifier.out_proj`` (ELECTRA: GELU; the encoder's
    ``pre_classifier``, ``pre_classifier_act`` and ``classifier_name`` say which), on the first token."""

    task = "sequence-classification"

    def load_head(self, weights: Weights) -> None:
        h, enc = self.config.hidden_size, self.encoder
        self.head_tensors = {f"{enc.classifier_name}.weight": "w", f"{enc.classifier_name}.bias": "b"}
        self.pre_w = self.pre_b = None  # (hidden_size, hidden_size), (hidden_size,)
        if enc.pre_classifier is not None:
            self.pre_w, self.pre_b = _dense(enc, weights, enc.pre_classifier, h, h)
            self.head_tensors |= {f"{enc.pre_classifier}.weight": "pre_w", f"{enc.pre_classifier}.bias": "pre_b"}
        elif enc.pooler is None:
            raise KeyError(f"tensor '{enc.pooler_name}.weight' is missing")
        self.w, self.b = _dense(enc, weights, enc.classifier_name, None, h)  # (num_labels, hidden_size), (num_labels,)
        _check_labels(self.config, self.w, enc.classifier_name)

    def head(self, hidden, pooled, **kwargs):
        ops = self.encoder.ops
        if self.pre_w is None:
            x = pooled  # [B, H] = tanh(dense(h[:, 0]))
        elif self.encoder.pre_classifier_act == "tanh":  # RoBERTa's classification head
            x = np.tanh(ops.linear(np.ascontiguousarray(hidden[:, 0]), self.pre_w, self.pre_b))
        else:  # DistilBERT's ReLU, ELECTRA's GELU
            x = ops.bias_activation_(
                ops.linear(np.ascontiguousarray(hidden[:, 0]), self.pre_w), self.pre_b, self.encoder.pre_classifier_act
            )
        return ops.linear(x, self.w, self.b)  # [B, num_labels]


class TokenClassifier(TaskModel):
    """``logits (batch, seq_len, num_labels)``: a linear layer on every token's hidden state."""

    task = "token-classification"
    head_tensors = {"classifier.weight": "w", "classifier.bias": "b"}

    def load_head(self, weights: Weights) -> None:
        self.w, self.b = _dense(self.encoder, weights, "classifier", None, self.config.hidden_size)  # (num_labels, hidden_size)
        _check_labels(self.config, self.w, "classifier")

    def head(self, hidden, pooled, **kwargs):
        batch, seq, h = hidden.shape
        return self.encoder.ops.linear(hidden.reshape(-1, h), self.w, self.b).reshape(batch, seq, -1)


class QuestionAnswerer(TaskModel):
    """``logits (batch, seq_len, 2)``: start and end logits of the answer span (``qa_outputs``)."""

    task = "question-answering"
    head_tensors = {"qa_outputs.weight": "w", "qa_outputs.bias": "b"}

    def load_head(self, weights: Weights) -> None:
        self.w, self.b = _dense(self.encoder, weights, "qa_outputs", 2, self.config.hidden_size)  # (2, hidden_size), (2,)

    def head(self, hidden, pooled, **kwargs):
        batch, seq, h = hidden.shape
        return self.encoder.ops.linear(hidden.reshape(-1, h), self.w, self.b).reshape(batch, seq, 2)


class MaskedLM(TaskModel):
    """``logits (batch, n_positions, vocab_size)``: transform -> activation -> layer norm -> tied decoder.

    ``positions`` ``(batch, n_positions)`` int selects the tokens to score (all tokens by default):
    scoring only the ``[MASK]`` positions skips most of the ``vocab_size``-wide product.
    """

    task = "masked-lm"

    def load_head(self, weights: Weights) -> None:
        c, h = self.config, self.config.hidden_size
        e = self.encoder.embeddings.word.shape[1]  # the embeddings' width: hidden_size, or embedding_size
        names = self.encoder.mlm_names
        self.head_tensors = {
            f"{names[0]}.weight": "transform_w",
            f"{names[0]}.bias": "transform_b",
            f"{names[1]}.weight": "ln_g",
            f"{names[1]}.bias": "ln_b",
        }
        # (width, hidden_size), (width,)
        self.transform_w, self.transform_b = _dense(self.encoder, weights, names[0], e, h)
        self.ln_g = weights.get(f"{names[1]}.weight", (e,))  # (width,)
        self.ln_b = weights.get(f"{names[1]}.bias", (e,))  # (width,)
        # The decoder is tied to the word embeddings; safetensors files store it once.
        self.decoder = (
            weights.get(f"{names[2]}.weight", (c.vocab_size, e))
            if weights.has(f"{names[2]}.weight")
            else self.encoder.embeddings.word
        )
        bias_name = names[3] if weights.has(names[3]) else f"{names[2]}.bias"
        self.decoder_b = weights.get(bias_name, (c.vocab_size,))  # (vocab_size,); decoder (vocab_size, width)

    def head(self, hidden, pooled, positions=None, **kwargs):
        batch, seq, h = hidden.shape
        if positions is not None:
            hidden = np.take_along_axis(hidden, np.asarray(positions)[..., None], axis=1)  # [B, P, H]
        n = hidden.shape[1]
        return self.decode(self.transform(hidden.reshape(-1, h))).reshape(batch, n, -1)  # [B, P, vocab]

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """``(rows, hidden_size)`` float32 states -> ``(rows, width)``: dense, activation, layer norm."""
        ops = self.encoder.ops
        x = ops.linear(np.ascontiguousarray(rows), self.transform_w)
        ops.bias_activation_(x, self.transform_b, self.encoder.mlm_act or self.config.hidden_act)
        return ops.layer_norm(x, self.ln_g, self.ln_b, self.config.layer_norm_eps)

    def decode(self, x: np.ndarray) -> np.ndarray:
        """``(rows, width)`` from :meth:`transform` -> ``(rows, vocab_size)`` float32 logits."""
        return self.encoder.ops.linear(x, self.decoder, self.decoder_b)
