"""The encoder's operations in plain NumPy: the ``backend="numpy"`` kernels.

The same functions, with the same arguments and results, as the Numba kernels of
:mod:`npformer.kernels.ops`, written as whole-array NumPy expressions with matrix products on
NumPy's BLAS. Nothing here imports Numba, so a process that runs only these never pays Numba's
import (about 0.3 s) and its loading of the compiled kernels (about 0.4 s): the command line uses
them for a one-off call on texts given as arguments. Per row they are slower than the Numba
kernels; the results agree with them to float32 rounding (BLAS sums in another order) and with
Transformers to 1e-4 (``tests/test_numpy_backend.py``). int8 weights are multiplied as the int8
GEMMs do it: activations quantized per row, exact integer sums (float32 BLAS on integer values,
in slices of k short enough to stay exact), the same float32 dequantization.
"""

from __future__ import annotations

import contextlib

import numpy as np

from npformer.kernels.linear import K_EXACT, TINY_ROW, int8_linear, quantize_rows  # noqa: F401 (the NumPy backend's int8)
from npformer.kernels.linear import numpy_linear as linear  # noqa: F401 (ops.linear on this backend)
from npformer.kernels.linear import numpy_linears as linears  # noqa: F401

F32 = np.float32
INV_SQRT2 = F32(0.7071067811865476)  # GELU's constants, both backends
SQRT_2_OVER_PI = F32(0.7978845608028654)

# The one activation registry: config.json's ``hidden_act`` -> the form both backends compute.
ACTIVATIONS = {
    "gelu": "erf",  # torch.nn.functional.gelu(x), exact: 0.5 x (1 + erf(x / sqrt 2))
    "gelu_new": "tanh",  # transformers NewGELUActivation: the tanh approximation
    "gelu_pytorch_tanh": "tanh",  # torch gelu(approximate="tanh"), the same formula
    "gelu_fast": "tanh",  # transformers FastGELUActivation, the same formula
    "relu": "relu",  # max(x, 0)
}
# erf's rational approximation on [-4, 4] (Eigen / TensorFlow ``generic_fast_erf_float``, |error|
# < 2e-7; erf = +-1 outside in float32): numerator and denominator coefficients in x^2, highest first.
# NumPy has no erf; :mod:`npformer.kernels.ops` evaluates the same polynomials from these tuples.
ERF_P = tuple(
    F32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
)
ERF_Q = tuple(
    F32(c)
    for c in (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02)
)


def erf(x: np.ndarray) -> np.ndarray:
    """``erf(x)`` elementwise for float32 ``x`` (the rational approximation :data:`ERF_P` / :data:`ERF_Q`)."""
    x = np.clip(x, F32(-4.0), F32(4.0))
    x2 = x * x
    p, q = np.full_like(x, ERF_P[0]), np.full_like(x, ERF_Q[0])
    for c in ERF_P[1:]:
        p = p * x2 + c
    for c in ERF_Q[1:]:
        q = q * x2 + c
    return x * p / q


def bias_gelu_(x: np.ndarray, bias: np.ndarray, tanh_form: bool) -> np.ndarray:
    """In place: ``x = gelu(x + bias)``, ``x (rows, n) float32``, ``bias (n,) float32``; the tanh
    approximation when ``tanh_form`` (reference: torch's GELU, ``approximate="none"`` / ``"tanh"``)."""
    x += bias
    if tanh_form:
        inner = SQRT_2_OVER_PI * (x + F32(0.044715) * x * x * x)
        x *= F32(0.5) * (F32(1.0) + np.tanh(inner))
    else:
        x *= F32(0.5) * (F32(1.0) + erf(x * INV_SQRT2))
    return x


def bias_relu_(x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """In place: ``x = max(x + bias, 0)``. ``x (rows, n) float32``, ``bias (n,) float32``."""
    x += bias
    np.maximum(x, F32(0.0), out=x)
    return x


def bias_activation_(x: np.ndarray, bias: np.ndarray, hidden_act: str) -> np.ndarray:
    """In place: ``x = act(x + bias)`` for ``x (rows, n) float32``, ``bias (n,) float32``, in the
    form :data:`ACTIVATIONS` names for ``hidden_act``. Raises ``KeyError`` for an unknown name."""
    form = ACTIVATIONS[hidden_act]
    return bias_relu_(x, bias) if form == "relu" else bias_gelu_(x, bias, form == "tanh")


def prepared(x: np.ndarray, weight) -> np.ndarray:
    """``x`` as :func:`linear` reads it: unchanged (:func:`int8_linear` quantizes its input itself)."""
    return x


def bias_activation_for_(x: np.ndarray, bias: np.ndarray, hidden_act: str, weight) -> np.ndarray:
    """In place ``x = act(x + bias)``, returned as :func:`prepared` returns it for ``weight`` (``x``)."""
    return bias_activation_(x, bias, hidden_act)


def gated_activation_for_(x: np.ndarray, hidden_act: str, weight) -> np.ndarray:
    """A GLU layer's activation ``act(x[:, :n]) * x[:, n:]``: ``x (rows, 2n) float32`` -> new
    ``(rows, n) float32``, as :func:`prepared` returns it for ``weight`` (unchanged). Raises
    ``KeyError`` for an unknown ``hidden_act``."""
    n = x.shape[1] // 2
    gated = bias_activation_(np.array(x[:, :n], dtype=F32), F32(0.0), hidden_act)
    gated *= x[:, n:]
    return gated


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """Layer norm over the last axis: ``x (rows, n) float32`` -> new ``(rows, n) float32``.
    reference: torch.nn.LayerNorm (biased variance, eps inside the square root); the statistics in
    float64, as the Numba kernel keeps them."""
    wide = x.astype(np.float64)
    mean = wide.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(np.square(wide - mean).mean(axis=-1, keepdims=True) + eps)
    return (x - mean.astype(F32)) * inv.astype(F32) * gamma + beta


def bias_residual_layer_norm_(x, bias, residual, gamma, beta, eps):
    """In place: ``x = LayerNorm(x + bias + residual)``; all ``(rows, n)`` / ``(n,)`` float32 (the
    "Add & Norm" step, reference: transformers BertSelfOutput / BertOutput)."""
    x += bias
    x += residual
    x[:] = layer_norm(x, gamma, beta, eps)
    return x


def bias_residual_layer_norm_for_(x, bias, residual, gamma, beta, eps, weight):
    """:func:`bias_residual_layer_norm_` -> ``(x, x)``: the result for the residual and as
    :func:`prepared` returns it for ``weight``."""
    x = bias_residual_layer_norm_(x, bias, residual, gamma, beta, eps)
    return x, x


def residual_layer_norm_for_(x, residual, gamma, beta, eps, weight):
    """In place ``x += residual`` (skipped when ``residual`` is None) -> ``(x, LayerNorm(x))``, the
    second a new array (:func:`prepared` leaves it as it is); a pre-LN block's "Add & Norm"."""
    if residual is not None:
        np.add(x, residual, out=x)
    return x, layer_norm(x, gamma, beta, eps)


def attention(q, k, v, mask, num_heads, probs, bias=None):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017), ``softmax(Q K^T / sqrt(d_head)
    + mask) V``, as :func:`npformer.kernels.ops.attention`: ``q, k, v (batch * seq, hidden) float32``,
    ``mask (batch, seq)`` int (0 = padding key) -> context ``(batch * seq, hidden) float32``; the
    probabilities are written to ``probs (batch, num_heads, seq, seq)`` unless it is empty; ``bias
    (num_heads, seq, seq)`` float32, if given, is added to the scores.

    Padding keys get probability 0; a row whose keys are all padding is uniform, as in Transformers
    (which adds the float32 minimum to masked scores). reference: transformers BertSelfAttention (eager).
    """
    batch, seq = mask.shape
    hidden = q.shape[1]
    d = hidden // num_heads

    def heads(t):  # (batch * seq, hidden) -> (batch, heads, seq, d)
        return t.reshape(batch, seq, num_heads, d).transpose(0, 2, 1, 3)

    scores = heads(q * F32(1.0 / np.sqrt(d))) @ heads(k).transpose(0, 1, 3, 2)  # [B, heads, S, S]
    if bias is not None:
        scores += bias
    keep = (mask != 0)[:, None, None, :]
    scores = np.where(keep, scores, F32(-np.inf))
    top = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - np.where(np.isfinite(top), top, F32(0.0)))
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.full_like(e, F32(1.0 / seq)), where=total > 0)
    if probs.shape[0] > 0:
        probs[...] = p
    return np.ascontiguousarray((p @ heads(v)).transpose(0, 2, 1, 3).reshape(batch * seq, hidden))


def rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, num_heads: int) -> np.ndarray:
    """The rotary position embedding (Su et al. 2021) of ``x (rows, hidden)`` float32, heads side by
    side, each row at the position whose ``cos``/``sin`` rows ``(rows, head_dim)`` are given:
    ``x cos + rotate_half(x) sin`` per head (Transformers' ``apply_rotary_pos_emb``)."""
    rows, hidden = x.shape
    t = x.reshape(rows, num_heads, hidden // num_heads)
    half = t.shape[-1] // 2
    turned = np.concatenate([-t[..., half:], t[..., :half]], axis=-1)
    return (t * cos[:, None, :] + turned * sin[:, None, :]).reshape(rows, hidden)


NUMPY_QUERY_ROWS = 128  # queries per step of the NumPy unpadded attention: (heads, 128, keys) scores held


def varlen_attention(q, k, v, offsets, num_heads, window, block, cos=None, sin=None):  # noqa: PLR0913
    """:func:`npformer.kernels.ops.varlen_attention` in NumPy: sequences packed without padding
    (rows ``offsets[s] .. offsets[s + 1]``), keys within ``window`` of each query (``< 0``: all),
    the rotary embedding applied first when ``cos``/``sin`` are given, ``block`` queries at a time
    (at most ``NUMPY_QUERY_ROWS``) against the keys they can reach, so memory holds ``(heads,
    block, keys)`` scores, never ``(seq, seq)``. Returns the context ``(tokens, hidden) float32``."""
    tokens, hidden = q.shape
    d = hidden // num_heads
    block = min(block, NUMPY_QUERY_ROWS)
    if cos is not None:
        q, k = rotary(q, cos, sin, num_heads), rotary(k, cos, sin, num_heads)
    context = np.empty((tokens, hidden), np.float32)
    for s in range(len(offsets) - 1):
        start, n = int(offsets[s]), int(offsets[s + 1] - offsets[s])

        def heads(t, a, b):  # rows a..b of the sequence -> (heads, b - a, d)
            return t[start + a : start + b].reshape(b - a, num_heads, d).transpose(1, 0, 2)

        for i0 in range(0, n, block):
            i1 = min(i0 + block, n)
            lo, hi = (0, n) if window < 0 else (max(0, i0 - window), min(n, i1 + window))
            scores = (heads(q, i0, i1) * F32(1.0 / np.sqrt(d))) @ heads(k, lo, hi).transpose(0, 2, 1)
            if window >= 0:
                distance = np.abs(np.arange(i0, i1)[:, None] - np.arange(lo, hi)[None, :])
                scores = np.where(distance <= window, scores, F32(-np.inf))
            e = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p = e / e.sum(axis=-1, keepdims=True)
            context[start + i0 : start + i1] = (p @ heads(v, lo, hi)).transpose(1, 0, 2).reshape(i1 - i0, hidden)
    return context


def threads(n: int):
    """Context for a forward pass on ``n`` threads: NumPy's operations are single-threaded (BLAS
    takes its thread count from :func:`npformer.runtime.one_parallel_runtime`), so nothing to set."""
    return contextlib.nullcontext()
