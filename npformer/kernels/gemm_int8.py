"""int8 matrix products: per-row quantization, the AVX-512 VNNI GEMM and a portable int8 kernel.

Scheme (Q8BERT, Zafrir et al. 2019; the dynamic quantization of ONNX Runtime and CTranslate2):
weights symmetric int8 per output channel, ``scale = max|W_row| / 127``; activations quantized
per token (per row of ``x``) by the same rule; ``x @ W.T`` accumulated in int32 and dequantized by
``x_scale[row] * w_scale[col]``, with the bias added in the same store. The float reference is
``(x_q * x_scale) @ (w_q * w_scale).T``, compared exactly in ``tests/test_quantization.py``.
The int8 tensor type built on these kernels is :class:`npformer.quantization.QuantizedTensor`.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import int32, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from npformer.kernels.llvm_ir import INT8_ROW_TILE, LANES, MR, NR, VNNI_K, Args, const, counted_loop, round_up, splat

VNNI_ARGS = ("x", "x_off", "ldx", "w", "w_off", "w_block", "k_steps", "out", "o_off", "ldo", "xs", "i_off", "w_sums",
             "w_scales", "bias", "j_off")


@njit(cache=True, inline="always", fastmath=True)
def _row_scale(row):
    """Symmetric int8 step of one row: ``max|row| / 127`` (1 for an all-zero row)."""
    amax = np.float32(0.0)
    for j in range(row.shape[0]):
        amax = max(amax, abs(row[j]))
    return amax / np.float32(127.0) if amax > 0 else np.float32(1.0)


@njit(cache=True, inline="always", fastmath=True)
def _round_clip(v):
    return min(max(np.rint(v), np.float32(-127.0)), np.float32(127.0))


@njit(cache=True, parallel=True, fastmath=True, nogil=True)
def quantize_rows(x):
    """Symmetric per-row int8: ``x (rows, n) float32`` -> ``(q (rows, n) int8, scales (rows,) float32)``.

    ``scale = max|x_row| / 127`` (1 for an all-zero row), ``q = round(x / scale)`` in [-127, 127].
    """
    rows, n = x.shape
    q = np.empty((rows, n), np.int8)
    scales = np.empty(rows, np.float32)
    for i in prange(rows):
        scale = _row_scale(x[i])
        inv = np.float32(1.0) / scale
        for j in range(n):
            q[i, j] = np.int8(_round_clip(x[i, j] * inv))
        scales[i] = scale
    return q, scales


@njit(cache=True, parallel=True, fastmath=True, nogil=True)
def int8_matmul(xq, x_scales, wq, w_scales, bias):
    """``(xq @ wq.T) * x_scales[:, None] * w_scales[None, :] + bias`` with int32 accumulation (portable kernel).

    ``xq (rows, k) int8``, ``wq (out, k) int8``, scales and ``bias (out,)`` float32 -> ``(rows, out) float32``.
    Used where the CPU lacks AVX-512 VNNI. Parallel over blocks of output channels; each weight
    row is reused from L1 across all rows of ``xq``. LLVM vectorizes the int8 dot product into
    packed multiply-adds (vpmaddwd); see ``tests/test_quantization.py``.
    """
    rows, k = xq.shape
    n_out = wq.shape[0]
    out = np.empty((rows, n_out), np.float32)
    block = 16
    for jb in prange((n_out + block - 1) // block):
        for j in range(jb * block, min(n_out, jb * block + block)):
            ws = w_scales[j]
            for i in range(rows):
                acc = int32(0)
                for t in range(k):  # every cast explicit, or Numba widens the sum to int64
                    acc = int32(acc + int32(int32(xq[i, t]) * int32(wq[j, t])))
                out[i, j] = np.float32(acc) * x_scales[i] * ws + bias[j]
    return out


# ---- AVX-512 VNNI path ---------------------------------------------------------------------------
# vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four into one of
# 16 int32 lanes. Weights are packed so that one 64-byte vector holds 4 consecutive k of 16 output
# channels; broadcasting 4 bytes of an activation row against it advances 16 dot products at once,
# with no horizontal sums (the layout of oneDNN's and MLAS's int8 GEMMs). Activations are shifted
# to unsigned (q + 128) and the shift is undone with the weight row sums:
# sum((q + 128) * w) - 128 * sum(w) = sum(q * w). Numba has no vector types, so the micro-kernel
# (8 activation rows x 32 channels = 16 zmm accumulators, dequantization fused into the store) is
# written in LLVM IR below.


@intrinsic
def _vnni_8x32(typingctx, x, x_off, ldx, w, w_off, w_block, k_steps, out, o_off, ldo, xs, i_off, w_sums,
               w_scales, bias, j_off):
    """``out[i0+a, j0:j0+32] = (sum_k xu[i0+a, k] * W[j0:j0+32, k] - 128 * w_sums) * xs * w_scales + bias``
    for a < 8, as 16 zmm accumulators over ``k_steps`` steps of 4 bytes (see the block comment)."""
    sig = types.none(x, x_off, ldx, w, w_off, w_block, k_steps, out, o_off, ldo, xs, i_off, w_sums, w_scales, bias,
                     j_off)

    def codegen(context, builder, sig, args):
        i8, i32, f32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
        v16, f16 = ir.VectorType(i32, LANES), ir.VectorType(f32, LANES)
        a = Args(context, builder, sig, args, VNNI_ARGS)
        x_off, ldx, w_off, w_block, k_steps, o_off, ldo, i_off, j_off = a.ints(
            "x_off", "ldx", "w_off", "w_block", "k_steps", "o_off", "ldo", "i_off", "j_off")

        def at(ptr, *offsets):
            return builder.gep(ptr, [offsets[0] if len(offsets) == 1 else builder.add(*offsets)])

        x_p, w_p = at(a.ptr("x", i8), x_off), at(a.ptr("w", i8), w_off)
        dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                                "llvm.x86.avx512.vpdpbusd.512")

        def step(t, accs):
            w_step, x_step = builder.mul(t, const(LANES * VNNI_K)), builder.mul(t, const(VNNI_K))
            ws = [builder.load(builder.bitcast(at(w_p, builder.mul(const(h), w_block), w_step), v16.as_pointer()),
                               align=1) for h in range(2)]
            new = []
            for row in range(MR):
                xv = builder.load(builder.bitcast(at(x_p, builder.mul(const(row), ldx), x_step), i32.as_pointer()),
                                  align=1)
                xb = splat(builder, xv, v16)
                new += [builder.call(dpbusd, [accs[2 * row + h], xb, ws[h]]) for h in range(2)]
            return new

        accs = counted_loop(builder, "vnni", k_steps, [ir.Constant(v16, [0] * LANES)] * (MR * 2), step)
        sums_p, wsc_p, xs_p = at(a.ptr("w_sums", i32), j_off), at(a.ptr("w_scales", f32), j_off), at(a.ptr("xs", f32), i_off)
        bias_p = at(a.ptr("bias", f32), j_off)
        out_p = at(a.ptr("out", f32), o_off)
        shift = ir.Constant(v16, [128] * LANES)
        for h in range(2):
            sums = builder.load(builder.bitcast(at(sums_p, const(LANES * h)), v16.as_pointer()), align=4)
            scales = builder.load(builder.bitcast(at(wsc_p, const(LANES * h)), f16.as_pointer()), align=4)
            biases = builder.load(builder.bitcast(at(bias_p, const(LANES * h)), f16.as_pointer()), align=4)
            correction = builder.mul(sums, shift)
            for row in range(MR):
                value = builder.sitofp(builder.sub(accs[2 * row + h], correction), f16)
                x_scale = splat(builder, builder.load(at(xs_p, const(row))), f16)
                value = builder.fadd(builder.fmul(builder.fmul(value, x_scale), scales), biases)
                dst = at(out_p, builder.mul(const(row), ldo), const(LANES * h))
                builder.store(value, builder.bitcast(dst, f16.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, parallel=True, fastmath=True, nogil=True)
def quantize_rows_u8(x, k_padded):
    """Per-row int8 quantization, stored shifted to uint8 (``q + 128``) in a buffer padded to
    ``(rows rounded up to 8, k_padded)`` with the value 128 (a zero). Returns ``(buffer, scales)``."""
    rows, n = x.shape
    rows_padded = (rows + MR - 1) // MR * MR
    q = np.empty((rows_padded, k_padded), np.uint8)
    scales = np.ones(rows_padded, np.float32)
    for i in prange(rows_padded):
        filled = 0
        if i < rows:
            scale = _row_scale(x[i])
            inv = np.float32(1.0) / scale
            for j in range(n):
                q[i, j] = np.uint8(np.int32(_round_clip(x[i, j] * inv)) + 128)
            scales[i] = scale
            filled = n
        for j in range(filled, k_padded):
            q[i, j] = np.uint8(128)
    return q, scales


@njit(cache=True, parallel=True, nogil=True)
def int8_matmul_vnni(xu, x_scales, w_packed, w_sums, w_scales, bias, out, k_padded):
    """VNNI int8 GEMM, dequantized, bias added: ``xu (rows_p, k_p) uint8`` (shifted activations,
    ``rows_p % 8 == 0``), ``w_packed`` from :meth:`QuantizedTensor.packed`, ``bias (n_p,) float32``
    -> written to ``out (rows_p, n_p) float32`` (C-contiguous), which is returned.

    Tiled for the caches: 256 activation rows at a time stay in L2 while the cores split the
    32-channel blocks; a block's packed weights (``32 * k_p`` bytes) stay in L1 across those rows.
    Exact (integer sums, then one float32 rounding) against the int64 reference product in
    ``tests/test_quantization.py::test_int8_kernels_are_exact``.
    """
    rows_p, n_padded = out.shape
    k_steps = k_padded // VNNI_K
    w_block = LANES * k_padded  # bytes of one 16-channel block
    for r0 in range(0, rows_p, INT8_ROW_TILE):
        for jb in prange(n_padded // NR):
            for i0 in range(r0, min(rows_p, r0 + INT8_ROW_TILE), MR):
                _vnni_8x32(xu, i0 * k_padded, k_padded, w_packed, jb * 2 * w_block, w_block, k_steps,
                           out, i0 * n_padded + jb * NR, n_padded, x_scales, i0, w_sums, w_scales, bias, jb * NR)
    return out


def pack_vnni(values: np.ndarray) -> np.ndarray:
    """Lay out ``(n, k) int8`` weights for :func:`int8_matmul_vnni`: channels padded to 32 and k to 4,
    blocks of 16 channels, each step of 4 k stored as 64 contiguous bytes -> ``(n_p * k_p,) int8``."""
    n, k = values.shape
    n_p, k_p = round_up(n, NR), round_up(k, VNNI_K)
    padded = np.zeros((n_p, k_p), np.int8)
    padded[:n, :k] = values
    return np.ascontiguousarray(padded.reshape(n_p // LANES, LANES, k_p // VNNI_K, VNNI_K)
                                .transpose(0, 2, 1, 3)).reshape(-1)


def unpack_vnni(packed: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_vnni`: ``(n_p * k_p,) int8`` -> ``(n, k) int8`` row-major copy."""
    n_p, k_p = round_up(n, NR), round_up(k, VNNI_K)
    rows = packed.reshape(n_p // LANES, k_p // VNNI_K, LANES, VNNI_K).transpose(0, 2, 1, 3).reshape(n_p, k_p)
    return np.ascontiguousarray(rows[:n, :k])
