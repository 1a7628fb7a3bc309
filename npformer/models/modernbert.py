"""ModernBERT (Warner et al. 2024, "Smarter, Better, Faster, Longer"): a pre-LN encoder with rotary
positions, alternating global and sliding-window attention and a gated MLP, as Transformers'
``modeling_modernbert`` computes it (eager attention)::

    x = LayerNorm(W_tok[input_ids])                                   (no position table)
    for layer i:
        h = x if i == 0 else LayerNorm_attn(x)
        q, k, v = split(h W_qkv)                                      one fused projection
        q, k = rotary(q), rotary(k)        theta: global_rope_theta, or local_rope_theta on local layers
        A = softmax(q k^T / sqrt(d_head) + mask) v                    local layers: |i - j| <= local_attention / 2
        x = x + A W_o
        u, g = split(LayerNorm_mlp(x) W_i)
        x = x + (act(u) * g) W_o'                                     GeGLU (Shazeer 2020)
    last_hidden_state = LayerNorm_final(x)

Layer ``i`` is global when ``i % global_attn_every_n_layers == 0``. LayerNorms have no bias unless
``norm_bias``, Linear layers none unless ``attention_bias`` / ``mlp_bias``. Checkpoint names are
Transformers' ``ModernBertModel`` (``model.`` in task checkpoints): ``embeddings.tok_embeddings``,
``layers.{i}.attn.Wqkv``... Heads: ``head`` (dense -> ``classifier_activation`` -> norm) then
``classifier`` (sequence classification on the ``cls`` token or the ``mean`` of the tokens, per
``classifier_pooling``; token classification; question answering), or the masked LM's
``decoder`` tied to the token embeddings. Its tokenizer is byte-level BPE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npformer.architectures import register
from npformer.config import boolean, epsilon, positive_int
from npformer.kernels import numpy_ops
from npformer.models.embeddings import Embeddings
from npformer.models.encoder import Encoder
from npformer.models.heads import MaskedLM, QuestionAnswerer, SequenceClassifier, TokenClassifier, _dense
from npformer.models.heads import ModelOutput
from npformer.models.inputs import check_inputs
from npformer.models.outputs import EncoderOutput
from npformer.quantization import read_matrix
from npformer.runtime import one_parallel_runtime

TOKEN_EMBEDDINGS = "embeddings.tok_embeddings.weight"
TABLE_CACHE = 8  # sequence lengths whose rotary and window tables are kept
LOWEST = np.finfo(np.float32).min  # what Transformers puts on the scores of keys out of the window
KEY_BLOCK = 512  # at most this many keys per step of the unpadded pass's online softmax


@dataclass
class ModernBertLayerWeights:
    """One ModernBERT block's weights, float32; Linear weights ``(out, in)`` (packed or int8 once
    converted), biases None and LayerNorm shifts zero where the config has none."""

    attn_norm_g: np.ndarray | None  # (hidden,); None in layer 0 (Transformers' nn.Identity)
    attn_norm_b: np.ndarray | None
    qkv_w: np.ndarray  # (3 * hidden, hidden): queries, keys, values
    qkv_b: np.ndarray | None
    o_w: np.ndarray  # (hidden, hidden)
    o_b: np.ndarray | None
    mlp_norm_g: np.ndarray  # (hidden,)
    mlp_norm_b: np.ndarray
    wi_w: np.ndarray  # (2 * intermediate, hidden): input half, then gate half
    wi_b: np.ndarray | None
    wo_w: np.ndarray  # (hidden, intermediate)
    wo_b: np.ndarray | None
    local: bool = False  # sliding-window attention (else global)

    LINEARS = ("qkv_w", "o_w", "wi_w", "wo_w")

    @classmethod
    def load(cls, weights, names: dict[str, str], config) -> "ModernBertLayerWeights":
        """Read a block under ``names`` (:meth:`ModernBertModel.layer_names`). Raises
        ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor."""
        h, i, c = config.hidden_size, config.intermediate_size, config

        def norm(prefix: str):
            return weights.get(names[prefix + "_g"], (h,)), (
                weights.get(names[prefix + "_b"], (h,)) if c.norm_bias else np.zeros(h, np.float32)
            )

        def linear(prefix: str, shape: tuple[int, int], bias: bool):
            return read_matrix(weights, names[prefix + "_w"], shape), weights.get(
                names[prefix + "_b"], (shape[0],)
            ) if bias else None

        attn_norm = norm("attn_norm") if "attn_norm_g" in names else (None, None)
        return cls(
            *attn_norm,
            *linear("qkv", (3 * h, h), c.attention_bias),
            *linear("o", (h, h), c.attention_bias),
            *norm("mlp_norm"),
            *linear("wi", (2 * i, h), c.mlp_bias),
            *linear("wo", (h, i), c.mlp_bias),
        )


def rotary_tables(seq: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)``, each ``(seq, head_dim)`` float32, of positions ``0 .. seq - 1``: angle
    ``p / theta^(2j / head_dim)`` for the pair ``j``, repeated for both halves, computed in float32
    as Transformers' default rotary embedding (Su et al. 2021)."""
    inv_freq = np.float32(1.0) / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    freqs = np.arange(seq, dtype=np.float32)[:, None] * inv_freq[None, :]
    angles = np.concatenate([freqs, freqs], axis=1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@register
class ModernBertModel(Encoder):
    """ModernBERT encoder from a Transformers ``ModernBertModel`` / ``ModernBertFor*`` checkpoint
    (see the module docstring). Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped
    tensor, and ``ValueError`` naming ``config.json``'s field for a setting it does not run."""

    model_type, description, prefix = "modernbert", "ModernBERT", "model."
    namespaces = ("embeddings.", "layers.", "final_norm.")
    token_types = False
    layer_class = ModernBertLayerWeights
    word_embeddings_name = TOKEN_EMBEDDINGS
    embedding_fields = {TOKEN_EMBEDDINGS: "word", "embeddings.norm.weight": "ln_g", "embeddings.norm.bias": "ln_b"}

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """``hidden_activation``, ``norm_eps``, the bias flags, rotary thetas, ``local_attention``,
        ``global_attn_every_n_layers`` and the classifier's settings, with ModernBertConfig's
        defaults. Raises ``ValueError`` naming ``source`` and the field."""

        def number(name: str, default):
            v = d.get(name, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{source}: field {name!r} must be a positive number, got {v!r}")
            return float(v)

        pooling = d.get("classifier_pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"{source}: field 'classifier_pooling' must be 'cls' or 'mean', got {pooling!r}")
        rope = d.get("rope_scaling")
        if rope not in (None, {}) and (not isinstance(rope, dict) or rope.get("rope_type", rope.get("type")) != "default"):
            raise ValueError(f"{source}: field 'rope_scaling' {rope!r} is not supported (npformer runs the default rotary)")
        local_theta = d.get("local_rope_theta", 10000.0)
        fields = {
            "hidden_act": d.get("hidden_activation", "gelu"),
            "layer_norm_eps": epsilon(d.get("norm_eps", 1e-5), source),
            "type_vocab_size": 1,
            "classifier_pooling": pooling,
            "classifier_activation": d.get("classifier_activation", "gelu"),
            "global_rope_theta": number("global_rope_theta", 160000.0),
            "local_rope_theta": number("local_rope_theta", local_theta) if local_theta is not None else None,
            "local_attention": positive_int(d.get("local_attention", 128), "local_attention", source),
            "global_attn_every_n_layers": positive_int(
                d.get("global_attn_every_n_layers", 3), "global_attn_every_n_layers", source
            ),
        }
        for flag, default in (
            ("norm_bias", False),
            ("attention_bias", False),
            ("mlp_bias", False),
            ("classifier_bias", False),
            ("decoder_bias", True),
        ):
            fields[flag] = boolean(d.get(flag, default), flag, source)
        if fields["classifier_activation"] not in numpy_ops.ACTIVATIONS:
            raise ValueError(
                f"{source}: classifier_activation {fields['classifier_activation']!r} is not supported; "
                f"use one of {sorted(numpy_ops.ACTIVATIONS)}"
            )
        return fields

    def __init__(self, config, weights):
        if config.hidden_act not in numpy_ops.ACTIVATIONS:
            raise ValueError(
                f"{config.source}: activation {config.hidden_act!r} is not supported; use one of {sorted(numpy_ops.ACTIVATIONS)}"
            )
        self.config = c = config
        if c.head_dim % 2:
            raise ValueError(f"{c.source}: the rotary embedding pairs head dimensions; head_dim {c.head_dim} is odd")
        h = c.hidden_size
        zeros = np.zeros(h, np.float32)
        self.embeddings = Embeddings(
            read_matrix(weights, TOKEN_EMBEDDINGS, (c.vocab_size, h)),
            None,
            None,
            weights.get("embeddings.norm.weight", (h,)),
            weights.get("embeddings.norm.bias", (h,)) if c.norm_bias else zeros,
        )
        self.projection = self.pooler = None
        self.layers = [ModernBertLayerWeights.load(weights, self.layer_names(i), c) for i in range(c.num_hidden_layers)]
        for i, layer in enumerate(self.layers):
            layer.local = i % c.global_attn_every_n_layers != 0
        self.final_g = weights.get("final_norm.weight", (h,))
        self.final_b = weights.get("final_norm.bias", (h,)) if c.norm_bias else zeros
        self.no_bias = np.zeros(c.intermediate_size, np.float32)  # a trace's copy of the GeGLU activation adds it
        self._tables: dict[tuple, np.ndarray] = {}

    @staticmethod
    def layer_names(i: int) -> dict[str, str]:
        p = f"layers.{i}."
        names = {
            "qkv_w": p + "attn.Wqkv.weight",
            "qkv_b": p + "attn.Wqkv.bias",
            "o_w": p + "attn.Wo.weight",
            "o_b": p + "attn.Wo.bias",
            "mlp_norm_g": p + "mlp_norm.weight",
            "mlp_norm_b": p + "mlp_norm.bias",
            "wi_w": p + "mlp.Wi.weight",
            "wi_b": p + "mlp.Wi.bias",
            "wo_w": p + "mlp.Wo.weight",
            "wo_b": p + "mlp.Wo.bias",
        }
        if i > 0:  # layer 0 has no attention norm (the embeddings' norm precedes it)
            names |= {"attn_norm_g": p + "attn_norm.weight", "attn_norm_b": p + "attn_norm.bias"}
        return names

    def _table(self, key: tuple, make):
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) >= TABLE_CACHE:
                self._tables.pop(next(iter(self._tables)))
            table = self._tables[key] = make()
        return table

    def rotary(self, seq: int, local: bool) -> tuple[np.ndarray, np.ndarray]:
        """The ``(cos, sin)`` tables of a local or global layer (:func:`rotary_tables`)."""
        c = self.config
        theta = c.local_rope_theta if local and c.local_rope_theta is not None else c.global_rope_theta
        return self._table(("rope", seq, theta), lambda: rotary_tables(seq, c.head_dim, theta))

    def window(self, seq: int) -> np.ndarray:
        """``(heads, seq, seq)`` float32 added to a local layer's scores: 0 where ``|i - j| <=
        local_attention // 2``, the float32 minimum elsewhere (Transformers' sliding-window mask)."""
        c = self.config

        def make():
            distance = np.abs(np.arange(seq)[:, None] - np.arange(seq)[None, :])
            bias = np.where(distance <= c.local_attention // 2, np.float32(0), LOWEST).astype(np.float32)
            return np.ascontiguousarray(np.broadcast_to(bias, (c.num_attention_heads, seq, seq)))

        return self._table(("window", seq), make)

    def layer(self, x, w, mask, run):
        """One ModernBERT block on a padded batch (the pass that gives attention probabilities):
        ``x (batch, seq, hidden)`` float32 -> ``(x, probs or None)``."""
        c = self.config
        batch, seq, hidden = x.shape
        probs = run.probs(c.num_attention_heads)
        window = self.window(seq) if w.local else None
        rotated = []

        def attend(q, k, v, cos, sin):
            rotated[:] = run.ops.rotary(q, cos, sin, c.num_attention_heads), run.ops.rotary(k, cos, sin, c.num_attention_heads)
            return run.ops.attention(*rotated, np.ascontiguousarray(v), mask, c.num_attention_heads, probs, window)

        x, parts = self.block(x.reshape(batch * seq, hidden), w, attend, np.tile(np.arange(seq), batch), seq, keep=run.tracing)
        if run.tracing:
            self._keep(run, *parts[:2], *rotated, probs, window, *parts[2:], x)
        return x.reshape(batch, seq, hidden), probs if run.output_attentions else None

    def block(self, x, w, attend, positions, width, keep: bool = False, scratch: np.ndarray | None = None):  # noqa: PLR0913
        """The block on ``x (rows, hidden)`` float32, each row at ``positions`` (< ``width``);
        ``attend(q, k, v, cos, sin)`` is the attention, which applies the rotary embedding (``cos``,
        ``sin``: ``(rows, head_dim)``); ``q, k, v`` are views of the fused projection. Returns ``(x,
        intermediates)``: those :meth:`_keep` hands a trace (the activation's copy only with
        ``keep``). With ``scratch`` (:meth:`Encoder.scratch` of ``(rows, max(3 hidden, 2
        intermediate))``) the fused projection and then ``Wi``'s output are written there, the
        first dead once attention has read it; the intermediates returned are then not kept."""
        ops, c = self.ops, self.config
        hidden, inter = c.hidden_size, c.intermediate_size
        h = x  # the norms' outputs come as the next product reads them (int8: quantized as normalized)
        if w.attn_norm_g is not None:
            h = ops.residual_layer_norm_for_(x, None, w.attn_norm_g, w.attn_norm_b, c.layer_norm_eps, w.qkv_w)[1]
        qkv = ops.linear(h, w.qkv_w, w.qkv_b, scratch=scratch)  # [rows, 3H]
        cos, sin = self.rotary(width, w.local)
        context = attend(qkv[:, :hidden], qkv[:, hidden : 2 * hidden], qkv[:, 2 * hidden :], cos[positions], sin[positions])
        attended = ops.linear(context, w.o_w, w.o_b)
        summed = attended.copy() if keep else attended  # x + attended, in place unless traced
        x, normed = ops.residual_layer_norm_for_(summed, x, w.mlp_norm_g, w.mlp_norm_b, c.layer_norm_eps, w.wi_w)
        inner = ops.linear(normed, w.wi_w, w.wi_b, scratch=scratch)
        gated = ops.gated_activation_for_(inner, c.hidden_act, w.wo_w)
        activated = ops.bias_activation_(np.array(inner[:, :inter]), self.no_bias, c.hidden_act) if keep else None
        mlp = ops.linear(gated, w.wo_w, w.wo_b)
        x = x + mlp if keep else np.add(mlp, x, out=mlp)
        attn_norm = getattr(h, "source", h) if w.attn_norm_g is not None else None
        return x, (attn_norm, qkv, attended, getattr(normed, "source", normed), inner, activated, mlp)

    def unpadded(self, input_ids: np.ndarray, attention_mask: np.ndarray, output_hidden_states: bool):
        """The pass over the real tokens only (ModernBERT's unpadding): ``(last_hidden_state,
        hidden_states or None)`` as ``(batch, seq, hidden)`` float32, zeros at padding; None when a
        row's real tokens are not one run (the padded pass takes those)."""
        real = attention_mask != 0
        lengths = real.sum(axis=1)
        first = real.argmax(axis=1)
        if any(not real[b, first[b] : first[b] + lengths[b]].all() for b in range(len(real))):
            return None
        batch, seq = input_ids.shape
        rows = np.flatnonzero(real.reshape(-1))
        positions = rows % seq  # each token's column: the position Transformers' eager pass gives it
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        c = self.config
        x = self.embeddings(input_ids.reshape(1, -1)[:, rows], None, c.layer_norm_eps, self.ops.layer_norm)[0]
        states = [x] if output_hidden_states else []
        scratch = None if self.blas_linears else self.scratch(len(rows), max(3 * c.hidden_size, 2 * c.intermediate_size))
        for w in self.layers:
            window = c.local_attention // 2 if w.local else -1

            def attend(q, k, v, cos, sin):
                return self.ops.varlen_attention(q, k, v, offsets, c.num_attention_heads, window, KEY_BLOCK, cos, sin)

            x = self.block(x, w, attend, positions, seq, scratch=scratch)[0]
            states.append(x) if output_hidden_states else None
        x = self.ops.layer_norm(x, self.final_g, self.final_b, c.layer_norm_eps)

        def padded(packed):
            out = np.zeros((batch * seq, c.hidden_size), np.float32)
            out[rows] = packed
            return out.reshape(batch, seq, -1)

        return padded(x), tuple(padded(s) for s in states) if output_hidden_states else None

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        record=None,
    ) -> EncoderOutput:
        """As :meth:`Encoder.__call__`; without attention probabilities or a trace, the pass runs
        over the real tokens only (:meth:`unpadded`), so a batch's padding costs nothing and each
        text's result is the same alone or in any batch."""
        if not output_attentions and record is None:
            ids, mask, _ = check_inputs(self.config, input_ids, attention_mask, None)
            with one_parallel_runtime(self.ops, self.blas_linears):
                found = self.unpadded(ids, mask, output_hidden_states)
            if found is not None:
                return EncoderOutput(last_hidden_state=found[0], pooler_output=None, hidden_states=found[1])
        return super().__call__(
            input_ids,
            attention_mask,
            token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            record=record,
        )

    def _keep(self, run, *values) -> None:
        """Hand the tracer a block's intermediates under Transformers' module names (the scores,
        which the fused kernel never holds, from the rotated queries and keys)."""
        batch, seq = run.shape
        attn_norm, qkv, q, k, probs, window, attended, normed, inner, activated, mlp, x = values
        heads = self.config.num_attention_heads
        qh, kh = (t.reshape(batch, seq, heads, -1).transpose(0, 2, 1, 3).astype(np.float64) for t in (q, k))
        scores = (qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(qh.shape[-1])).astype(np.float32)
        if window is not None:
            scores = scores + window
        for key, value in (
            ("attn_norm", attn_norm),
            ("qkv", qkv),
            ("scores", scores),
            ("probs", probs),
            ("attn", attended),
            ("mlp_norm", normed),
            ("wi", inner),
            ("act", activated),
            ("mlp", mlp),
            ("layer", x),
        ):
            run.keep(key, value)

    def traced_names(self, i: int, call: int) -> dict[str, str]:
        p = f"layers.{i}"
        return {
            "attn_norm": f"{p}.attn_norm",
            "qkv": f"{p}.attn.Wqkv",
            "scores": f"{p}.attn.scores",
            "probs": f"{p}.attn.probs",
            "attn": f"{p}.attn",
            "mlp_norm": f"{p}.mlp_norm",
            "wi": f"{p}.mlp.Wi",
            "act": f"{p}.mlp.act",
            "mlp": f"{p}.mlp",
            "layer": p,
        }

    def layer_output_name(self, i: int) -> str:
        return f"layers.{i}"

    def finish(self, x, run):
        """The final norm."""
        batch, seq, hidden = x.shape
        x = self.ops.layer_norm(x.reshape(batch * seq, hidden), self.final_g, self.final_b, self.config.layer_norm_eps).reshape(
            batch, seq, hidden
        )
        if run.tracing:
            run.record("final_norm", x)
        return x

    @property
    def num_parameters(self) -> int:
        return super().num_parameters + int(self.final_g.size) + int(self.final_b.size) * self.config.norm_bias


def _prediction_head(model, weights) -> dict[str, str]:
    """Read ModernBERT's ``head`` (dense -> activation -> norm) into the masked LM's transform
    attributes of ``model``; returns their checkpoint names -> attributes."""
    enc, c, h = model.encoder, model.config, model.config.hidden_size
    w = weights.get("head.dense.weight", (h, h))
    model.transform_w = enc.packed(w)
    model.transform_b = weights.get("head.dense.bias", (h,)) if c.classifier_bias else np.zeros(h, np.float32)
    model.ln_g = weights.get("head.norm.weight", (h,))
    model.ln_b = weights.get("head.norm.bias", (h,)) if c.norm_bias else np.zeros(h, np.float32)
    return {
        "head.dense.weight": "transform_w",
        "head.dense.bias": "transform_b",
        "head.norm.weight": "ln_g",
        "head.norm.bias": "ln_b",
    }


class ModernBertMaskedLM(MaskedLM):
    """ModernBERT's masked LM: ``head`` then ``decoder`` (tied to the token embeddings, with
    ``decoder.bias`` unless ``decoder_bias`` is false)."""

    def load_head(self, weights) -> None:
        c = self.config
        self.head_tensors = {"decoder.bias": "decoder_b"} | _prediction_head(self, weights)  # the logits: "decoder"
        self.decoder = (
            weights.get("decoder.weight", (c.vocab_size, c.hidden_size))
            if weights.has("decoder.weight")
            else self.encoder.embeddings.word
        )
        self.decoder_b = weights.get("decoder.bias", (c.vocab_size,)) if c.decoder_bias else np.zeros(c.vocab_size, np.float32)
        self.encoder.mlm_act = c.classifier_activation


class _HeadThenClassifier:
    """``head`` on the chosen states, then ``classifier`` (weight ``(outputs, hidden)``, bias)."""

    transform = MaskedLM.transform

    def load_head(self, weights) -> None:
        self.head_tensors = {"classifier.weight": "w", "classifier.bias": "b"} | _prediction_head(self, weights)
        self.w, self.b = _dense(self.encoder, weights, "classifier", None, self.config.hidden_size)
        self.encoder.mlm_act = self.config.classifier_activation

    def classify(self, rows: np.ndarray) -> np.ndarray:
        return self.encoder.ops.linear(self.transform(rows), self.w, self.b)


class ModernBertSequenceClassifier(_HeadThenClassifier, SequenceClassifier):
    """``logits (batch, num_labels)``: the first token's state (``classifier_pooling`` ``cls``) or
    the mean over the real tokens (``mean``), then ``head`` and ``classifier``."""

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs) -> ModelOutput:
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        return ModelOutput(self.head(out.last_hidden_state, None, attention_mask=attention_mask), out.last_hidden_state)

    def head(self, hidden, pooled, attention_mask=None, **kwargs):
        if self.config.classifier_pooling == "cls":
            pooled = hidden[:, 0]
        else:  # the mean over the real tokens (all of them without a mask)
            mask = (
                np.ones(hidden.shape[:2], np.float32)
                if attention_mask is None
                else np.asarray(attention_mask, np.float32).reshape(hidden.shape[:2])
            )
            pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return self.classify(np.ascontiguousarray(pooled, np.float32))


class ModernBertTokenClassifier(_HeadThenClassifier, TokenClassifier):
    """``logits (batch, seq_len, num_labels)``: ``head`` and ``classifier`` on every token."""

    def head(self, hidden, pooled, **kwargs):
        batch, seq, h = hidden.shape
        return self.classify(hidden.reshape(-1, h)).reshape(batch, seq, -1)


class ModernBertQuestionAnswerer(_HeadThenClassifier, QuestionAnswerer):
    """``logits (batch, seq_len, 2)``: ``head`` and a two-output ``classifier`` on every token."""

    def head(self, hidden, pooled, **kwargs):
        batch, seq, h = hidden.shape
        return self.classify(hidden.reshape(-1, h)).reshape(batch, seq, 2)


ModernBertModel.heads = {
    "masked-lm": ModernBertMaskedLM,
    "sequence-classification": ModernBertSequenceClassifier,
    "token-classification": ModernBertTokenClassifier,
    "question-answering": ModernBertQuestionAnswerer,
}
