"""BERT's post-layer-norm transformer block (Vaswani et al. 2017; Devlin et al. 2019): its weights
(:class:`LayerWeights`), its forward pass (:func:`transformer_layer`) and the Transformers module
names of its intermediates (:func:`module_names`). Architectures with another block (pre-LN,
ModernBERT's) bring their own weights class and :meth:`~npformer.models.encoder.Encoder.layer`.

    A = softmax(Q K^T / sqrt(d_head) + mask) V            per head, Q = x W_q + b_q ...
    x = LayerNorm(x + A W_o + b_o)
    x = LayerNorm(x + act(x W_1 + b_1) W_2 + b_2)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np

from npformer.config import Config
from npformer.kernels.protocol import Ops
from npformer.quantization import read_matrix
from npformer.weights import Weights


@dataclass
class LayerWeights:
    """One transformer block's weights, float32. Linear weights (``*_w``) are ``(out, in)`` arrays,
    or a :class:`PackedMatrix` / :class:`QuantizedTensor` once packed or quantized."""

    q_w: np.ndarray  # (hidden_size, hidden_size) query projection
    q_b: np.ndarray  # (hidden_size,)
    k_w: np.ndarray  # (hidden_size, hidden_size) key projection
    k_b: np.ndarray  # (hidden_size,)
    v_w: np.ndarray  # (hidden_size, hidden_size) value projection
    v_b: np.ndarray  # (hidden_size,)
    o_w: np.ndarray  # (hidden_size, hidden_size) attention output projection
    o_b: np.ndarray  # (hidden_size,)
    ln1_g: np.ndarray  # (hidden_size,) layer norm after attention: scale
    ln1_b: np.ndarray  # (hidden_size,) and shift
    ff1_w: np.ndarray  # (intermediate_size, hidden_size) feed-forward in
    ff1_b: np.ndarray  # (intermediate_size,)
    ff2_w: np.ndarray  # (hidden_size, intermediate_size) feed-forward out
    ff2_b: np.ndarray  # (hidden_size,)
    ln2_g: np.ndarray  # (hidden_size,) layer norm after the feed-forward network: scale
    ln2_b: np.ndarray  # (hidden_size,) and shift

    @classmethod
    def load(cls, weights: Weights, names: dict[str, str], config: Config) -> "LayerWeights":
        """Read every field from ``weights`` under the checkpoint names in ``names`` (Linear weights
        through :func:`read_matrix`, which also reads int8 checkpoints)."""
        h, i = config.hidden_size, config.intermediate_size
        shapes = {"ff1_w": (i, h), "ff1_b": (i,), "ff2_w": (h, i)}
        out = {}
        for f in fields(cls):
            shape = shapes.get(f.name, (h, h) if f.name.endswith("_w") else (h,))
            read = read_matrix if f.name in cls.LINEARS else Weights.get
            out[f.name] = read(weights, names[f.name], shape)
        return cls(**out)

    LINEARS = ("q_w", "k_w", "v_w", "o_w", "ff1_w", "ff2_w")


@dataclass
class RunState:
    """What one forward pass carries beside the math (as llama2.c's ``RunState``): the backend's
    kernels, this thread's reusable buffer, whether the attention probabilities are wanted, and the
    tracer. The encoder makes one per pass and sets ``names`` and ``scratch`` before each block; a
    block reads the kernels from ``ops`` and hands its intermediates to :meth:`keep`.

    ``ops`` is the backend's kernel module (:mod:`npformer.kernels.ops`, Numba, or
    :mod:`npformer.kernels.numpy_ops`; see :class:`npformer.kernels.protocol.Ops`); ``shape`` the
    pass's ``(batch, seq)``; ``scratch`` a reusable float32 buffer for the feed-forward activations
    (the Numba GEMMs' ``scratch``) or None; ``record(name, array)``, when tracing, receives each
    intermediate under the Transformers module name ``names[key]`` (:func:`module_names`; see
    :mod:`npformer.tracing`). ``next_weight`` is the next block's query weight (set by the encoder
    before each block, None after the last), so that a block's last layer norm can write the next
    block's input as its Q/K/V products read it (int8: quantized); ``ready`` holds that hand-off,
    ``(x, prepared x)``, until the next block takes it."""

    ops: Ops
    shape: tuple[int, int]
    output_attentions: bool = False
    record: Callable[[str, np.ndarray], None] | None = None
    names: dict[str, str] = field(default_factory=dict)
    scratch: np.ndarray | None = None
    next_weight: object = None
    ready: tuple | None = None

    def take_ready(self, x: np.ndarray, weight) -> object:
        """``x`` as ``weight``'s product reads it: what the previous block prepared for exactly this
        ``x`` (the same array object it returned), else prepared now (:meth:`Ops.prepared`)."""
        ready, self.ready = self.ready, None
        return ready[1] if ready is not None and ready[0] is x else self.ops.prepared(x.reshape(-1, x.shape[-1]), weight)

    @property
    def tracing(self) -> bool:
        return self.record is not None

    def probs(self, num_heads: int) -> np.ndarray:
        """The buffer the attention kernel writes its probabilities to: ``(batch, heads, seq, seq)``
        float32 when they are wanted or traced, else an empty array (the kernel then keeps none)."""
        batch, seq = self.shape
        wanted = self.output_attentions or self.tracing
        return np.empty((batch, num_heads, seq, seq) if wanted else (0, 0, 0, 0), np.float32)

    def keep(self, key: str, value: np.ndarray | None, bias: np.ndarray | None = None) -> None:
        """When tracing, record ``value`` under ``names[key]``: a ``(batch, heads, seq, seq)`` array as
        it is, rows ``(batch * seq, width)`` as a ``(batch, seq, width)`` copy (the buffers change in
        place later), with ``bias`` added where the fused kernel that follows would add it."""
        if self.record is None or value is None:
            return
        if value.ndim != 4:
            value = (value.copy() if bias is None else value + bias).reshape(*self.shape, -1)
        self.record(self.names[key], value)


def transformer_layer(
    x: np.ndarray, w: LayerWeights, mask: np.ndarray, config: Config, run: RunState, position_bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One post-LN block: ``x (batch, seq, hidden) float32`` -> same shape, and the attention
    probabilities ``(batch, heads, seq, seq) float32`` when ``run.output_attentions`` (else None).
    ``mask (batch, seq)`` is the attention mask (1 = token, 0 = padding); ``position_bias`` a
    ``(heads, seq, seq)`` float32 bias added to the attention scores (MPNet's relative positions), or
    None. The kernels, buffers and tracer come from ``run`` (:class:`RunState`)."""
    ops = run.ops
    batch, seq, hidden = x.shape
    xq = run.take_ready(x, w.q_w)  # quantized once for Q, K and V when they are int8
    x = x.reshape(batch * seq, hidden)
    probs = run.probs(config.num_attention_heads)
    q, k, v = ops.linears(xq, (w.q_w, w.k_w, w.v_w), (w.q_b, w.k_b, w.v_b))  # [B*S, H] each
    run.keep("query", q), run.keep("key", k), run.keep("value", v)
    if position_bias is None:
        context = ops.attention(q, k, v, mask, config.num_attention_heads, probs)  # [B*S, H]
    else:
        context = ops.attention(q, k, v, mask, config.num_attention_heads, probs, position_bias)
    run.keep("probs", probs)
    run.keep("attention", context)
    attended = ops.linear(context, w.o_w)
    run.keep("attention_dense", attended, w.o_b)
    x, ready = ops.bias_residual_layer_norm_for_(attended, w.o_b, x, w.ln1_g, w.ln1_b, config.layer_norm_eps, w.ff1_w)
    run.keep("ln1", x)
    inner = ops.linear(ready, w.ff1_w, scratch=run.scratch)  # [B*S, H] -> [B*S, intermediate]
    ready = ops.bias_activation_for_(inner, w.ff1_b, config.hidden_act, w.ff2_w)  # (int8: quantized as it goes)
    run.keep("activation", inner)
    out = ops.linear(ready, w.ff2_w)
    run.keep("output_dense", out, w.ff2_b)
    if run.next_weight is None:
        x = ops.bias_residual_layer_norm_(out, w.ff2_b, x, w.ln2_g, w.ln2_b, config.layer_norm_eps)
    else:  # (int8: the next block's Q/K/V input quantized as each row is normalized)
        x, ready = ops.bias_residual_layer_norm_for_(out, w.ff2_b, x, w.ln2_g, w.ln2_b, config.layer_norm_eps, run.next_weight)
    run.keep("ln2", x)
    x = x.reshape(batch, seq, hidden)
    if run.next_weight is not None:
        run.ready = (x, ready)
    return x, probs if run.output_attentions else None


def module_names(layer_keys: dict[str, str]) -> dict[str, str]:
    """The Transformers module names of one layer's intermediates, from its checkpoint keys
    (``layer_names(i)``): ``query``/``key``/``value``, the attention module (its context output) and
    its ``probs`` / ``scores``, the attention output dense and LayerNorm, the feed-forward activation
    (BERT's ``intermediate``, DistilBERT's ``ffn.activation``), output dense and LayerNorm."""
    module = {f: key.rsplit(".", 1)[0] for f, key in layer_keys.items()}
    attention = module["q_w"].rsplit(".", 1)[0]
    ffn = module["ff1_w"].rsplit(".", 1)[0]
    # BERT's attention.self returns the context; DistilBERT's attention module includes out_lin
    context = attention if attention.endswith(".self") else attention + ".context"
    return {
        "query": module["q_w"],
        "key": module["k_w"],
        "value": module["v_w"],
        "attention": context,
        "scores": attention + ".scores",
        "probs": attention + ".probs",
        "attention_dense": module["o_w"],
        "ln1": module["ln1_g"],
        "activation": ffn if ffn.endswith("intermediate") else ffn + ".activation",
        "output_dense": module["ff2_w"],
        "ln2": module["ln2_g"],
    }
