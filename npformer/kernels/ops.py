"""Numba kernels: layer norm, attention with its masked softmax, fused bias/residual ops, the
activations (:mod:`npformer.kernels.activations`) and the linear layer (:func:`npformer.kernels.linear.linear`).

Every kernel works on float32 arrays, in parallel over rows or (sequence, head) pairs (``prange``),
and is compiled with npformer's on-disk cache (:mod:`npformer.kernels.jit`) so a new process loads
the machine code instead of compiling again. Matrix products run on the packed float32 micro-kernel of
:mod:`npformer.kernels.gemm_f32` (NumPy's BLAS for plain arrays) or the int8 GEMMs of
:mod:`npformer.kernels.gemm_int8`, chosen by :mod:`npformer.kernels.linear`. Fast-math without
reassociation (:data:`npformer.kernels.jit.FASTMATH`): every sum is added in the order written
here, so a process that compiles a kernel and one that loads it from the cache agree bit for bit.
Each kernel names the reference it reproduces.
"""

from __future__ import annotations

import contextlib
import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from npformer.kernels.jit import FASTMATH, njit
from npformer.kernels.activations import (  # noqa: F401
    _exp,
    bias_activation_,
    bias_activation_for_,
    bias_gelu_,
    bias_relu_,
    gated_activation_for_,
)
from npformer.kernels.attention import attention, varlen_attention  # noqa: F401
from npformer.kernels.llvm_ir import Args, const, counted_loop, vector_at
from npformer.kernels.numpy_ops import rotary  # noqa: F401 (one NumPy rotary for both backends)
from npformer.kernels.gemm_int8 import quantize_into, zero_row
from npformer.kernels.linear import QuantizedRows, QuantizedTensor, activation_buffers, linear, linears, prepared  # noqa: F401

F32 = np.float32


STAT_LANES = 8  # float64 lanes of a vector of the layer norm's sums (one zmm, or two ymm on AVX2)
STAT_VECTORS = 4  # vectors summed side by side, so that the adds' latency overlaps
STAT_CHUNK = STAT_LANES * STAT_VECTORS  # elements per step of _lane_moment


@intrinsic
def _lane_moment(typingctx, row, chunks, center):
    """Over the first ``chunks * STAT_CHUNK`` elements of a float32 row with unit stride, in float64:
    ``sum(row[j])`` when ``center`` is None, else ``sum((row[j] - center) ** 2)``. Element ``j``
    goes to lane ``j % 32`` of four vectors of eight, which add up in a fixed order: the vectors
    ``(v0 + v1) + (v2 + v3)``, then the lanes pairwise. No fast-math flag is set, so no compile,
    cached or not, for AVX-512 or AVX2, sums another way (see :data:`npformer.kernels.jit.FASTMATH`)."""
    if not (isinstance(row, types.Array) and row.dtype == types.float32 and row.ndim == 1):
        return None  # a row of layout "A" is read as contiguous: the caller checks its stride
    squares = not isinstance(center, (types.NoneType, types.Omitted))
    sig = types.float64(row, chunks, center)

    def codegen(context, builder, sig, args):
        a = Args(context, builder, sig, args, ("row", "chunks", "center"))
        f32, f64, i32 = ir.FloatType(), ir.DoubleType(), ir.IntType(32)
        vec32, vec64 = ir.VectorType(f32, STAT_LANES), ir.VectorType(f64, STAT_LANES)
        ptr, (count,) = a.ptr("row", f32), a.ints("chunks")
        if squares:
            one = builder.insert_element(ir.Constant(vec64, ir.Undefined), args[2], ir.Constant(i32, 0))
            mean = builder.shuffle_vector(
                one, ir.Constant(vec64, ir.Undefined), ir.Constant(ir.VectorType(i32, STAT_LANES), [0] * STAT_LANES)
            )

        def step(t, values):
            out = []
            for k, acc in enumerate(values):
                offset = builder.add(builder.mul(t, const(STAT_CHUNK)), const(k * STAT_LANES))
                v = builder.fpext(builder.load(vector_at(builder, ptr, offset, vec32), align=4), vec64)
                if squares:
                    d = builder.fsub(v, mean)
                    v = builder.fmul(d, d)
                out.append(builder.fadd(acc, v))
            return out

        def pairwise(values):  # ((a + b) + (c + d)) + ...: a power-of-two count, added in this order
            while len(values) > 1:
                values = [builder.fadd(values[i], values[i + 1]) for i in range(0, len(values), 2)]
            return values[0]

        zero = ir.Constant(vec64, [0.0] * STAT_LANES)
        acc = pairwise(counted_loop(builder, "moment", count, [zero] * STAT_VECTORS, step))
        return pairwise([builder.extract_element(acc, ir.Constant(i32, i)) for i in range(STAT_LANES)])

    return sig, codegen


@njit(inline="always", fastmath=FASTMATH)
def _layer_norm_row(src, dst, gamma, beta, eps):
    # reference: torch.nn.LayerNorm (biased variance, eps inside the square root); statistics in
    # float64 (summed in a fixed order, _lane_moment), the normalization in float32.
    n = src.shape[0]
    chunks = n // STAT_CHUNK if src.strides[0] == 4 else 0  # (a strided row: the loops below only)
    mean = _lane_moment(src, chunks, None)
    for j in range(chunks * STAT_CHUNK, n):
        mean += src[j]
    mean /= n
    var = _lane_moment(src, chunks, mean)
    for j in range(chunks * STAT_CHUNK, n):
        d = src[j] - mean
        var += d * d
    mean32, inv = F32(mean), F32(1.0 / math.sqrt(var / n + eps))
    for j in range(n):
        dst[j] = (src[j] - mean32) * inv * gamma[j] + beta[j]


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def layer_norm(x, gamma, beta, eps):
    """Layer norm over the last axis. ``x (rows, n) float32`` -> new ``(rows, n) float32``.

    reference: torch.nn.LayerNorm (biased variance, eps inside the square root); statistics are
    accumulated in float64 so long rows lose no precision. Tested against NumPy float64 in
    ``tests/test_kernels.py::test_layer_norm_and_fused_residual`` (1e-5).
    """
    out = np.empty_like(x)
    for i in prange(x.shape[0]):
        _layer_norm_row(x[i], out[i], gamma, beta, eps)
    return out


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def bias_residual_layer_norm_(x, bias, residual, gamma, beta, eps):
    """In place: ``x = LayerNorm(x + bias + residual)``; all ``(rows, n)`` / ``(n,)`` float32.

    The "Add & Norm" step after attention and after the feed-forward network (Vaswani et al. 2017;
    reference: transformers BertSelfOutput / BertOutput, DistilBERT's sa_layer_norm / output_layer_norm).
    Tested in ``tests/test_kernels.py::test_layer_norm_and_fused_residual`` (1e-4).
    """
    rows, n = x.shape
    for i in prange(rows):
        for j in range(n):
            x[i, j] = x[i, j] + bias[j] + residual[i, j]
        _layer_norm_row(x[i], x[i], gamma, beta, eps)
    return x


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def add_layer_norm_quantize_(x, bias, residual, gamma, beta, eps, out, q, scales, shift):  # noqa: PLR0913
    """The "Add & Norm" steps with the next int8 GEMM's quantization: in place ``x = x + bias +
    residual`` (each term skipped when None), ``out = LayerNorm(x)`` (``out`` may be ``x``), and
    each row of ``out`` quantized into ``q``, ``scales`` (padding included) as
    ``activations.bias_activation_quantize_`` does it. Returns ``(q, scales)``."""
    rows, n = x.shape
    for i in prange(q.shape[0]):
        if i < rows:
            if bias is not None:
                for j in range(n):
                    x[i, j] = x[i, j] + bias[j]
            if residual is not None:
                for j in range(n):
                    x[i, j] = x[i, j] + residual[i, j]
            _layer_norm_row(x[i], out[i], gamma, beta, eps)
            quantize_into(out[i], q, scales, i, shift)
        else:
            zero_row(q, i, shift)
    return q, scales


def bias_residual_layer_norm_for_(x, bias, residual, gamma, beta, eps, weight):
    """:func:`bias_residual_layer_norm_` (``x`` in place, all float32) -> ``(x, ready)``: ``x`` for the
    residual and ``ready``, ``x`` as :func:`prepared` returns it for ``weight``, the next Linear
    layer; for an int8 weight each row is quantized as soon as it is normalized (the same bits as
    the two steps)."""
    if not isinstance(weight, QuantizedTensor) or not x.flags.c_contiguous or not residual.flags.c_contiguous:
        x = bias_residual_layer_norm_(x, bias, residual, gamma, beta, eps)
        return x, prepared(x, weight)
    values, scales, shift = activation_buffers(*x.shape)
    add_layer_norm_quantize_(x, bias, residual, gamma, beta, eps, x, values, scales, shift)
    return x, QuantizedRows(values, scales, x)


def residual_layer_norm_for_(x, residual, gamma, beta, eps, weight):
    """A pre-LN block's "Add & Norm": in place ``x += residual`` (skipped when ``residual`` is None),
    then ``(x, ready)``: ``x`` for the residual stream and ``ready``, ``LayerNorm(x)`` (a new array)
    as :func:`prepared` returns it for ``weight``, the next Linear layer; for an int8 weight each
    row is quantized as soon as it is normalized (the same bits as the separate steps). All float32,
    ``(rows, n)`` / ``(n,)``; reference: torch.nn.LayerNorm after the residual sum, as Transformers'
    ModernBertEncoderLayer computes ``mlp_norm(hidden_states + attn_out)``."""
    if not isinstance(weight, QuantizedTensor) or not x.flags.c_contiguous:
        if residual is not None:
            np.add(x, residual, out=x)
        return x, prepared(layer_norm(x, gamma, beta, eps), weight)
    values, scales, shift = activation_buffers(*x.shape)
    out = np.empty(x.shape, np.float32)
    add_layer_norm_quantize_(x, None, residual, gamma, beta, eps, out, values, scales, shift)
    return x, QuantizedRows(values, scales, out)


@contextlib.contextmanager
def threads(n: int):
    """Context for a forward pass: Numba's parallel kernels on ``n`` threads (``numba.set_num_threads``
    is per calling thread), restored after."""
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
