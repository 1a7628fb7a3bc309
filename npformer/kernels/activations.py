"""The feed-forward activations (GELU in its erf and tanh forms, ReLU) as Numba kernels, and the
activation fused with the next int8 product's quantization of its input.

In an int8 block the first feed-forward Linear layer's output (``rows x intermediate_size``, the
widest activations of the pass) is read by ``act(x + bias)`` and then again by the row quantizer of
the second layer's GEMM. :func:`bias_activation_quantize_` does both while each row is in cache, by
the same inline functions as the separate kernels (:func:`bias_gelu_`, :func:`bias_relu_`,
:func:`npformer.kernels.gemm_int8.quantize_rows_u8` and its AVX2 / portable siblings), so the
results are the same bits (``tests/test_kernels.py``). :func:`gated_activation_for_` does the same
for a gated (GLU) feed-forward layer, ModernBERT's GeGLU.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import int32, prange, types
from numba.extending import intrinsic

from npformer.kernels.gemm_int8 import quantize_into, zero_row
from npformer.kernels.jit import FASTMATH, njit
from npformer.kernels.linear import QuantizedRows, QuantizedTensor, activation_buffers, prepared
from npformer.kernels.numpy_ops import ACTIVATIONS, ERF_P, ERF_Q, INV_SQRT2, SQRT_2_OVER_PI

F32 = np.float32
FORMS = {"erf": 0, "tanh": 1, "relu": 2}  # ACTIVATIONS' forms, as bias_activation_quantize_ takes them


@njit(inline="always", fastmath=FASTMATH)
def _erf(x):
    # Rational approximation of erf on [-4, 4] (|error| < 2e-7, outside it erf = +-1 in float32),
    # the float32 ``erf`` of Eigen / TensorFlow (``generic_fast_erf_float``), coefficients in
    # numpy_ops.ERF_P / ERF_Q. Vectorizes, unlike libm.
    x = min(max(x, F32(-4.0)), F32(4.0))
    x2 = x * x
    p = ERF_P[0]
    for c in ERF_P[1:]:
        p = x2 * p + c
    q = ERF_Q[0]
    for c in ERF_Q[1:]:
        q = x2 * q + c
    return x * p / q


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with those bits (C's memcpy / numpy's view)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(inline="always", fastmath=FASTMATH)
def _exp(x):
    # float32 exp (Cephes expf): x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial,
    # 2^n built in the exponent bits. Relative error < 2e-7; vectorizes, unlike libm's expf.
    x = min(max(x, F32(-87.0)), F32(88.0))
    n = np.rint(x * F32(1.4426950408889634))
    r = x - n * F32(0.693359375) - n * F32(-2.12194440e-4)
    p = F32(1.9875691500e-4) * r + F32(1.3981999507e-3)
    p = p * r + F32(8.3334519073e-3)
    p = p * r + F32(4.1665795894e-2)
    p = p * r + F32(1.6666665459e-1)
    p = p * r + F32(5.0000001201e-1)
    p = p * r * r + r + F32(1.0)
    return p * _float_from_bits(int32((int32(n) + int32(127)) << int32(23)))


@njit(inline="always", fastmath=FASTMATH)
def _gelu_erf(x):
    # reference: torch.nn.functional.gelu(x) (approximate="none"): 0.5 x (1 + erf(x / sqrt 2))
    return F32(0.5) * x * (F32(1.0) + _erf(x * INV_SQRT2))


@njit(inline="always", fastmath=FASTMATH)
def _gelu_tanh(x):
    # reference: transformers NewGELUActivation / gelu(approximate="tanh"):
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); x*x*x, never x**3.
    inner = SQRT_2_OVER_PI * (x + F32(0.044715) * x * x * x)
    e = _exp(F32(2.0) * min(max(inner, F32(-10.0)), F32(10.0)))  # tanh(u) = (e^2u - 1) / (e^2u + 1)
    return F32(0.5) * x * (F32(1.0) + (e - F32(1.0)) / (e + F32(1.0)))


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def bias_gelu_(x, bias, tanh_form):
    """In place: ``x = gelu(x + bias)``. ``x (rows, n) float32``, ``bias (n,) float32``.

    ``tanh_form`` selects the tanh approximation (``gelu_new``, ``gelu_pytorch_tanh``) instead of
    the exact erf form (``gelu``). Tested against torch's GELU in ``tests/test_kernels.py::test_gelu``.
    """
    rows, n = x.shape
    for i in prange(rows):
        if tanh_form:
            for j in range(n):
                x[i, j] = _gelu_tanh(x[i, j] + bias[j])
        else:
            for j in range(n):
                x[i, j] = _gelu_erf(x[i, j] + bias[j])
    return x


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def bias_relu_(x, bias):
    """In place: ``x = max(x + bias, 0)``. ``x (rows, n) float32``, ``bias (n,) float32``."""
    rows, n = x.shape
    for i in prange(rows):
        for j in range(n):
            x[i, j] = max(x[i, j] + bias[j], F32(0.0))
    return x


def bias_activation_(x: np.ndarray, bias: np.ndarray, hidden_act: str) -> np.ndarray:
    """In place: ``x = act(x + bias)`` for ``x (rows, n) float32``, ``bias (n,) float32``, with the
    kernel :data:`ACTIVATIONS` names for ``hidden_act``. Raises ``KeyError`` for an unknown name."""
    form = ACTIVATIONS[hidden_act]
    return bias_relu_(x, bias) if form == "relu" else bias_gelu_(x, bias, form == "tanh")


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def bias_activation_quantize_(x, bias, form, q, scales, shift):
    """In place ``x = act(x + bias)`` (``form``: 0 GELU erf, 1 GELU tanh, 2 ReLU), and each row
    quantized per row as it is finished: ``q[i, :n] = round(x[i] / s_i) + shift``, ``scales[i] = s_i``
    (``s_i = max|x[i]| / 127``). ``x (rows, n) float32`` C-contiguous, ``bias (n,) float32``;
    ``q (rows_p, k_p)`` (``rows_p >= rows``, ``k_p >= n``; uint8 with ``shift`` 128 for the VNNI
    GEMM, int16 or int8 with ``shift`` 0 otherwise): padding columns and rows are set to ``shift``
    (a zero), padding rows keep the ``scales`` they came with. Returns ``(q, scales)``."""
    rows, n = x.shape
    for i in prange(q.shape[0]):
        if i < rows:
            row = x[i]
            if form == 0:
                for j in range(n):
                    row[j] = _gelu_erf(row[j] + bias[j])
            elif form == 1:
                for j in range(n):
                    row[j] = _gelu_tanh(row[j] + bias[j])
            else:
                for j in range(n):
                    row[j] = max(row[j] + bias[j], F32(0.0))
            quantize_into(row, q, scales, i, shift)
        else:
            zero_row(q, i, shift)
    return q, scales


def bias_activation_for_(x: np.ndarray, bias: np.ndarray, hidden_act: str, weight) -> np.ndarray | QuantizedRows:
    """In place ``x = act(x + bias)`` (``x (rows, n) float32``, ``bias (n,)``), returned as
    :func:`npformer.kernels.linear.prepared` returns it for ``weight``, the next Linear layer: for an
    int8 weight the activation and the quantization run in one pass over each row
    (:func:`bias_activation_quantize_`, the same bits as the two steps). Raises ``KeyError`` for an
    activation :data:`ACTIVATIONS` lacks."""
    form = ACTIVATIONS[hidden_act]
    if not isinstance(weight, QuantizedTensor) or not x.flags.c_contiguous or x.dtype != F32:
        return prepared(bias_activation_(x, bias, hidden_act), weight)
    values, scales, shift = activation_buffers(*x.shape)
    bias_activation_quantize_(x, np.ascontiguousarray(bias, dtype=F32), FORMS[form], values, scales, shift)
    return QuantizedRows(values, scales, x)


@njit(inline="always", fastmath=FASTMATH)
def _gated_row(x, form, out):
    # out[j] = act(x[j]) * x[n + j] for n = out.shape[0]: the two halves of a GLU layer's input
    n = out.shape[0]
    if form == 0:
        for j in range(n):
            out[j] = _gelu_erf(x[j]) * x[n + j]
    elif form == 1:
        for j in range(n):
            out[j] = _gelu_tanh(x[j]) * x[n + j]
    else:
        for j in range(n):
            out[j] = max(x[j], F32(0.0)) * x[n + j]


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def gated_activation(x, form, out):
    """``out = act(x[:, :n]) * x[:, n:]`` (a GLU: GeGLU for the GELU forms, ReGLU for ReLU; Shazeer,
    "GLU variants improve Transformer", 2020) for ``x (rows, 2n) float32``, ``out (rows, n) float32``
    (both C-contiguous); ``form`` as in :data:`FORMS`. Returns ``out``."""
    for i in prange(out.shape[0]):
        _gated_row(x[i], form, out[i])
    return out


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def gated_activation_quantize(x, form, out, q, scales, shift):
    """:func:`gated_activation` with each finished row of ``out`` quantized for the next int8 GEMM,
    as :func:`bias_activation_quantize_` does it (same ``q``, ``scales``, ``shift`` and padding).
    Returns ``(q, scales)``."""
    for i in prange(q.shape[0]):
        if i < out.shape[0]:
            _gated_row(x[i], form, out[i])
            quantize_into(out[i], q, scales, i, shift)
        else:
            zero_row(q, i, shift)
    return q, scales


def gated_activation_for_(x: np.ndarray, hidden_act: str, weight) -> np.ndarray | QuantizedRows:
    """A GLU layer's activation: ``act(x[:, :n]) * x[:, n:]`` for ``x (rows, 2n) float32`` (ModernBERT's
    ``Wi`` output: input half, then gate half, as Transformers' ``ModernBertMLP`` splits it) ->
    ``(rows, n)``, returned as :func:`npformer.kernels.linear.prepared` returns it for ``weight``, the
    next Linear layer; for an int8 weight each row is quantized as it is finished. One pass over ``x``,
    the same bits as the activation then the product in NumPy. Raises ``KeyError`` for an activation
    :data:`ACTIVATIONS` lacks."""
    form = FORMS[ACTIVATIONS[hidden_act]]
    rows, n = x.shape[0], x.shape[1] // 2
    x = np.ascontiguousarray(x, dtype=F32)
    out = np.empty((rows, n), F32)
    if not isinstance(weight, QuantizedTensor):
        return prepared(gated_activation(x, form, out), weight)
    values, scales, shift = activation_buffers(rows, n)
    gated_activation_quantize(x, form, out, values, scales, shift)
    return QuantizedRows(values, scales, out)
