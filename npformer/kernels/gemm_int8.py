"""int8 matrix products: per-row quantization, the AVX-512 VNNI GEMM and a portable int8 kernel.

Scheme (Q8BERT, Zafrir et al. 2019; the dynamic quantization of ONNX Runtime and CTranslate2):
weights symmetric int8 per output channel, ``scale = max|W_row| / 127``; activations quantized
per token (per row of ``x``) by the same rule; ``x @ W.T`` accumulated in int32 and dequantized by
``x_scale[row] * w_scale[col]``, with the bias added in the same store. The float reference is
``(x_q * x_scale) @ (w_q * w_scale).T``, compared exactly in ``tests/test_quantization.py``.
The int8 tensor type built on these kernels is :class:`npformer.quantization.QuantizedTensor`.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from llvmlite import ir
from numba import int32, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from npformer.kernels.jit import FASTMATH, njit
from npformer.kernels.llvm_ir import (
    AVX2_MR,
    F32_LANES,
    INT8_ROW_TILE,
    LANES,
    MR,
    NR,
    VNNI_K,
    VNNI_MR,
    Args,
    const,
    counted_loop,
    element_at,
    round_up,
    splat,
    vector_at,
)
from npformer.kernels.linear import TINY_ROW  # the step rule for subnormal-tiny rows, shared

VNNI_ARGS = (
    "x",
    "x_off",
    "w",
    "w_off",
    "w_block",
    "k_steps",
    "out",
    "o_off",
    "ldo",
    "xs",
    "i_off",
    "w_sums",
    "w_scales",
    "bias",
    "j_off",
)


@intrinsic
def _vector_abs_max(typingctx, row, chunks):
    """``max(0, |row[j]|)`` over the first ``chunks * F32_LANES`` elements of a contiguous float32 row,
    in vector registers (``llvm.fabs``, ``llvm.maxnum``, one horizontal ``llvm.vector.reduce.fmax``).
    Numba's scalar loop for this reduction did not vectorize and took 80% of the quantization time."""
    if not (isinstance(row, types.Array) and row.dtype == types.float32 and row.ndim == 1 and row.layout == "C"):
        return None
    sig = types.float32(row, chunks)

    def codegen(context, builder, sig, args):
        a = Args(context, builder, sig, args, ("row", "chunks"))
        f32 = ir.FloatType()
        vec = ir.VectorType(f32, F32_LANES)
        ptr, (count,) = a.ptr("row", f32), a.ints("chunks")
        suffix = f"v{F32_LANES}f32"
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec]), f"llvm.fabs.{suffix}")
        maxnum = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec]), f"llvm.maxnum.{suffix}")
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [vec]), f"llvm.vector.reduce.fmax.{suffix}")

        def step(t, values):
            v = builder.load(vector_at(builder, ptr, builder.mul(t, const(F32_LANES)), vec), align=4)
            return [builder.call(maxnum, [values[0], builder.call(fabs, [v])])]

        (top,) = counted_loop(builder, "absmax", count, [ir.Constant(vec, [0.0] * F32_LANES)], step)
        return builder.call(reduce, [top])

    return sig, codegen


@njit(inline="always", fastmath=FASTMATH)
def _row_scale(row):
    """Symmetric int8 step of one row: ``max|row| / 127`` (1 for an all-zero or subnormal-tiny row),
    as ``max|row|`` times the float32 reciprocal of 127 (the NumPy backend computes the same)."""
    chunks = row.shape[0] // F32_LANES
    amax = _vector_abs_max(row, chunks)
    for j in range(chunks * F32_LANES, row.shape[0]):
        amax = max(amax, abs(row[j]))
    return amax * np.float32(1.0 / 127.0) if amax >= TINY_ROW else np.float32(1.0)


@njit(inline="always", fastmath=FASTMATH)
def _round_clip(v):
    return min(max(np.rint(v), np.float32(-127.0)), np.float32(127.0))


@njit(inline="always", fastmath=FASTMATH)
def _quantize_row(row, out, shift):
    """``out[j] = round(row[j] / scale) + shift`` (``out``'s integer type); returns the row's scale."""
    scale = _row_scale(row)
    inv = np.float32(1.0) / scale
    for j in range(row.shape[0]):
        out[j] = np.int32(_round_clip(row[j] * inv)) + np.int32(shift)
    return scale


@njit(inline="always", fastmath=FASTMATH)
def quantize_into(row, q, scales, i, shift):
    """Row ``i`` of a padded activation buffer (the layouts of ``linear.activation_buffers``): ``row``
    quantized into ``q[i, :n]`` plus ``shift`` (:func:`_quantize_row`), its step in ``scales[i]``, the
    padding columns set to ``shift`` (a zero). The fused kernels end each row with it."""
    n = row.shape[0]
    scales[i] = _quantize_row(row, q[i, :n], shift)
    for j in range(n, q.shape[1]):
        q[i, j] = shift


@njit(inline="always")
def zero_row(q, i, shift):
    """A padding row of an activation buffer: every column ``shift`` (a zero); its scale stays."""
    for j in range(q.shape[1]):
        q[i, j] = shift


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def quantize_rows(x):
    """Symmetric per-row int8: ``x (rows, n) float32`` -> ``(q (rows, n) int8, scales (rows,) float32)``.

    ``scale = max|x_row| / 127`` (1 for an all-zero row), ``q = round(x / scale)`` in [-127, 127].
    """
    rows, n = x.shape
    q = np.empty((rows, n), np.int8)
    scales = np.empty(rows, np.float32)
    for i in prange(rows):
        scales[i] = _quantize_row(x[i], q[i], 0)
    return q, scales


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
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


def store_dequantized(builder, a: Args, accs, lanes: int, rows: int, corrections) -> None:
    """The int8 kernels' epilogue, the same float32 steps on every path: for each row ``r`` of the
    tile and each of its two vectors ``h``, ``out = float(acc - correction[h]) * xs[r] * w_scales + bias``
    (``correction`` None: nothing to subtract), stored at ``out[o_off + r * ldo + lanes * h]``."""
    f32 = ir.FloatType()
    vec = ir.VectorType(f32, lanes)
    o_off, ldo, i_off, j_off = a.ints("o_off", "ldo", "i_off", "j_off")

    def load(name, offset):
        return builder.load(vector_at(builder, a.ptr(name, f32), builder.add(j_off, const(offset)), vec), align=4)

    for h in range(2):
        scales, biases = load("w_scales", lanes * h), load("bias", lanes * h)
        for row in range(rows):
            acc = accs[2 * row + h] if corrections[h] is None else builder.sub(accs[2 * row + h], corrections[h])
            x_scale = splat(builder, builder.load(element_at(builder, a.ptr("xs", f32), i_off, const(row))), vec)
            value = builder.fadd(builder.fmul(builder.fmul(builder.sitofp(acc, vec), x_scale), scales), biases)
            at = builder.add(o_off, builder.add(builder.mul(const(row), ldo), const(lanes * h)))
            builder.store(value, vector_at(builder, a.ptr("out", f32), at, vec), align=4)


# ---- AVX-512 VNNI path ---------------------------------------------------------------------------
# vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four into one of
# 16 int32 lanes. Weights are packed so that one 64-byte vector holds 4 consecutive k of 16 output
# channels; broadcasting 4 bytes of an activation row against it advances 16 dot products at once,
# with no horizontal sums (the layout of oneDNN's and MLAS's int8 GEMMs). Activations are shifted
# to unsigned (q + 128) and the shift is undone with the weight row sums:
# sum((q + 128) * w) - 128 * sum(w) = sum(q * w). Numba has no vector types, so the micro-kernel
# (12 activation rows x 32 channels = 24 zmm accumulators, dequantization fused into the store;
# 8- and 4-row ones for the rest of a tile) is written in LLVM IR below. Twelve rows load the two
# weight vectors once per 24 vpdpbusd instead of 16: 0.92-0.99x the 8-row tile's time at encoder
# shapes on a Xeon (same bits). The kernel reads its rows from a panel (BLIS's packed A): for each
# step of 4 k, the 4 bytes of each of its ``mr`` rows side by side, so one pointer advancing by
# ``4 * mr`` bytes addresses every broadcast. Reading the rows in place (12 streams 4 bytes at a
# time, their addresses kept in spilled registers) ran at 0.4-0.7x this speed on Zen 4, varying
# from process to process; the panels are copied once per row tile and shared by all channel blocks.


def _vnni_kernel(mr):
    """The ``mr x 32`` VNNI micro-kernel as a Numba intrinsic: ``out[i0+a, j0:j0+32] = (sum_k xu[i0+a, k]
    * W[j0:j0+32, k] - 128 * w_sums) * xs * w_scales + bias`` for ``a < mr``, as ``2 * mr`` zmm
    accumulators over ``k_steps`` steps of 4 bytes, the rows read from the panel at ``x[x_off:]``
    (see the block comment)."""

    def kernel(typingctx, x, x_off, w, w_off, w_block, k_steps, out, o_off, ldo, xs, i_off, w_sums, w_scales, bias, j_off):
        sig = types.none(x, x_off, w, w_off, w_block, k_steps, out, o_off, ldo, xs, i_off, w_sums, w_scales, bias, j_off)

        def codegen(context, builder, sig, args):
            i8, i32 = ir.IntType(8), ir.IntType(32)
            v16 = ir.VectorType(i32, LANES)
            a = Args(context, builder, sig, args, VNNI_ARGS)
            x_off, w_off, w_block, k_steps, j_off = a.ints("x_off", "w_off", "w_block", "k_steps", "j_off")

            at = partial(element_at, builder)

            x_p, w_p = at(a.ptr("x", i8), x_off), at(a.ptr("w", i8), w_off)
            dpbusd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v16, [v16, v16, v16]), "llvm.x86.avx512.vpdpbusd.512"
            )

            def step(t, accs):
                w_step, x_step = builder.mul(t, const(LANES * VNNI_K)), builder.mul(t, const(mr * VNNI_K))
                ws = [
                    builder.load(builder.bitcast(at(w_p, builder.mul(const(h), w_block), w_step), v16.as_pointer()), align=1)
                    for h in range(2)
                ]
                new = []
                for row in range(mr):
                    xv = builder.load(builder.bitcast(at(x_p, const(row * VNNI_K), x_step), i32.as_pointer()), align=4)
                    xb = splat(builder, xv, v16)
                    new += [builder.call(dpbusd, [accs[2 * row + h], xb, ws[h]]) for h in range(2)]
                return new

            accs = counted_loop(builder, "vnni", k_steps, [ir.Constant(v16, [0] * LANES)] * (mr * 2), step)
            sums_p = at(a.ptr("w_sums", i32), j_off)
            shift = ir.Constant(v16, [128] * LANES)
            corrections = [
                builder.mul(builder.load(builder.bitcast(at(sums_p, const(LANES * h)), v16.as_pointer()), align=4), shift)
                for h in range(2)
            ]
            store_dequantized(builder, a, accs, LANES, mr, corrections)
            return context.get_dummy_value()

        return sig, codegen

    kernel.__name__ = kernel.__qualname__ = f"_vnni_{mr}x{NR}"
    return intrinsic(kernel)


_vnni_wide, _vnni_8x32, _vnni_4x32 = _vnni_kernel(VNNI_MR), _vnni_kernel(8), _vnni_kernel(4)


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
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
            scales[i] = _quantize_row(x[i], q[i, :n], 128)
            filled = n
        for j in range(filled, k_padded):
            q[i, j] = np.uint8(128)
    return q, scales


@njit(inline="always")
def _tile_height(rows_left):
    """Rows of the next micro-kernel tile: 12 while they last, then 8, then 4 (``rows_left % 4 == 0``)."""
    return VNNI_MR if rows_left >= VNNI_MR else (8 if rows_left >= 8 else 4)


@njit(nogil=True)
def _pack_panels(xu, r0, r1, panel):
    """Rows ``r0:r1`` of ``xu`` laid out as the micro-kernels' panels (see the block comment), one
    after another in ``panel`` from its start: the tile of rows ``i0:i0+mr`` at byte ``(i0 - r0) * k_p``,
    its step ``t`` at ``4 * mr * t`` within, row ``a``'s 4 bytes at ``4 * a`` within that."""
    k_steps = xu.shape[1] // VNNI_K
    src, dst = xu.view(np.uint32), panel.view(np.uint32)
    i0 = r0
    while i0 < r1:
        mr = _tile_height(r1 - i0)
        tile = dst[(i0 - r0) * k_steps : (i0 - r0 + mr) * k_steps].reshape(k_steps, mr)
        rows = src[i0 : i0 + mr]
        for t in range(k_steps):  # over views: 0.28-0.35x the time of flat index arithmetic
            step = tile[t]
            for a in range(mr):
                step[a] = rows[a, t]
        i0 += mr


# Called, not inlined, from the parallel loop: inlined into the parfor's body the same micro-kernels
# ran at 0.5-0.8x this speed on Zen 4.
@njit(nogil=True)
def _vnni_rows(panel, x_scales, w_packed, w_sums, w_scales, bias, out, k_padded, jb, r0, r1):
    """Activation rows ``r0:r1`` (packed by :func:`_pack_panels`) times the ``jb``-th 32-channel
    block, tile by tile (12, 8, 4 rows; the same bits whichever tile computes a row)."""
    n_padded = out.shape[1]
    k_steps, w_block, w_off, j_off = k_padded // VNNI_K, LANES * k_padded, jb * 2 * LANES * k_padded, jb * NR
    i0 = r0
    while i0 < r1:
        mr = _tile_height(r1 - i0)
        args = (panel, (i0 - r0) * k_padded, w_packed, w_off, w_block, k_steps, out, i0 * n_padded + j_off)
        if mr == VNNI_MR:
            _vnni_wide(*args, n_padded, x_scales, i0, w_sums, w_scales, bias, j_off)
        elif mr == 8:
            _vnni_8x32(*args, n_padded, x_scales, i0, w_sums, w_scales, bias, j_off)
        else:
            _vnni_4x32(*args, n_padded, x_scales, i0, w_sums, w_scales, bias, j_off)
        i0 += mr


@njit(parallel=True, nogil=True)
def int8_matmul_vnni(xu, x_scales, w_packed, w_sums, w_scales, bias, out, k_padded):
    """VNNI int8 GEMM, dequantized, bias added: ``xu (rows_p, k_p) uint8`` (shifted activations,
    ``rows_p % 8 == 0``), ``w_packed`` from :meth:`QuantizedTensor.packed`, ``bias (n_p,) float32``
    -> written to ``out (rows_p, n_p) float32`` (C-contiguous), which is returned.

    Tiled for the caches: 240 activation rows at a time, copied into the micro-kernels' panels
    (:func:`_pack_panels`), stay in L2 while the cores split the 32-channel blocks; a block's packed
    weights (``32 * k_p`` bytes) stay in L1 or L2 across those rows.
    Exact (integer sums, then one float32 rounding) against the int64 reference product in
    ``tests/test_quantization.py::test_int8_kernels_are_exact``.
    """
    rows_p, n_padded = out.shape
    panel = np.empty(min(rows_p, INT8_ROW_TILE) * k_padded, np.uint8)
    # row tiles of equal size, in whole 8-row groups: no short last tile streams all the weights
    # again for a few rows
    groups, tiles = rows_p // MR, -(-rows_p // INT8_ROW_TILE)
    for tile in range(tiles):
        r0, r1 = tile * groups // tiles * MR, (tile + 1) * groups // tiles * MR
        _pack_panels(xu, r0, r1, panel)
        for jb in prange(n_padded // NR):
            _vnni_rows(panel, x_scales, w_packed, w_sums, w_scales, bias, out, k_padded, jb, r0, r1)
    return out


# ---- AVX2 path -----------------------------------------------------------------------------------
# Without VNNI (AVX2 CPUs, or NPFORMER_ISA=avx2) the weights are widened once to int16 and packed in
# blocks of 8 output channels, each step of 2 k stored as 16 contiguous int16 (one ymm register);
# vpmaddwd multiplies 16 int16 pairs and adds each pair into one of 8 int32 lanes. Activations are
# quantized as on every path, widened to int16 (so no vpmaddubsw saturation: the int32 sums are
# exact and equal the VNNI path's), and dequantized by the same float32 operations in the same
# order, so both paths give the same bits. A 4 x 16 tile keeps 8 accumulators in registers.
AVX2_ARGS = (
    "x",
    "x_off",
    "ldx",
    "w",
    "w_off",
    "w_block",
    "k_pairs",
    "out",
    "o_off",
    "ldo",
    "xs",
    "i_off",
    "w_scales",
    "bias",
    "j_off",
)
AVX2_LANES = 8  # int32 lanes of a ymm register: channels per packed block


@intrinsic
def _avx2_4x16(typingctx, x, x_off, ldx, w, w_off, w_block, k_pairs, out, o_off, ldo, xs, i_off, w_scales, bias, j_off):
    """``out[i0+a, j0:j0+16] = (sum_k x[i0+a, k] * W[j0:j0+16, k]) * xs * w_scales + bias`` for a < 4,
    ``x`` int16 activations, ``w`` int16 weights packed by :func:`pack_avx2`, over ``k_pairs`` steps."""
    sig = types.none(x, x_off, ldx, w, w_off, w_block, k_pairs, out, o_off, ldo, xs, i_off, w_scales, bias, j_off)

    def codegen(context, builder, sig, args):
        i16, i32 = ir.IntType(16), ir.IntType(32)
        v8, h16 = ir.VectorType(i32, AVX2_LANES), ir.VectorType(i16, 2 * AVX2_LANES)
        a = Args(context, builder, sig, args, AVX2_ARGS)
        x_off, ldx, w_off, w_block, k_pairs = a.ints("x_off", "ldx", "w_off", "w_block", "k_pairs")

        at = partial(element_at, builder)

        x_p, w_p = at(a.ptr("x", i16), x_off), at(a.ptr("w", i16), w_off)
        pmaddwd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [h16, h16]), "llvm.x86.avx2.pmadd.wd")

        def step(t, accs):
            w_step, x_step = builder.mul(t, const(2 * AVX2_LANES)), builder.mul(t, const(2))
            ws = [
                builder.load(builder.bitcast(at(w_p, builder.mul(const(h), w_block), w_step), h16.as_pointer()), align=2)
                for h in range(2)
            ]
            new = []
            for row in range(AVX2_MR):
                pair = builder.load(builder.bitcast(at(x_p, builder.mul(const(row), ldx), x_step), i32.as_pointer()), align=2)
                xb = builder.bitcast(splat(builder, pair, v8), h16)
                new += [builder.add(accs[2 * row + h], builder.call(pmaddwd, [xb, ws[h]])) for h in range(2)]
            return new

        accs = counted_loop(builder, "avx2", k_pairs, [ir.Constant(v8, [0] * AVX2_LANES)] * (AVX2_MR * 2), step)
        store_dequantized(builder, a, accs, AVX2_LANES, AVX2_MR, (None, None))
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def quantize_rows_i16(x, k_padded):
    """Per-row int8 quantization (as :func:`quantize_rows`) widened to int16, in a zero-padded
    ``(rows rounded up to 4, k_padded)`` buffer for :func:`int8_matmul_avx2`. Returns ``(buffer, scales)``."""
    rows, n = x.shape
    rows_padded = (rows + AVX2_MR - 1) // AVX2_MR * AVX2_MR
    q = np.zeros((rows_padded, k_padded), np.int16)
    scales = np.ones(rows_padded, np.float32)
    for i in prange(rows):
        scales[i] = _quantize_row(x[i], q[i, :n], 0)
    return q, scales


@njit(parallel=True, nogil=True)
def int8_matmul_avx2(xq, x_scales, w_packed, w_scales, bias, out):
    """AVX2 int8 GEMM, dequantized, bias added: ``xq (rows_p, k_p) int16`` from :func:`quantize_rows_i16`,
    ``w_packed`` from :func:`pack_avx2`, ``w_scales`` and ``bias (n_p,) float32`` -> written to
    ``out (rows_p, n_p) float32``, which is returned. Tiled as :func:`int8_matmul_vnni`; exact
    against the int64 reference in ``tests/test_quantization.py``."""
    rows_p, k_p = xq.shape
    n_padded = out.shape[1]
    w_block = AVX2_LANES * k_p  # int16 elements of one 8-channel block
    for r0 in range(0, rows_p, INT8_ROW_TILE):
        for jb in prange(n_padded // (2 * AVX2_LANES)):
            for i0 in range(r0, min(rows_p, r0 + INT8_ROW_TILE), AVX2_MR):
                _avx2_4x16(
                    xq,
                    i0 * k_p,
                    k_p,
                    w_packed,
                    jb * 2 * w_block,
                    w_block,
                    k_p // 2,
                    out,
                    i0 * n_padded + jb * 2 * AVX2_LANES,
                    n_padded,
                    x_scales,
                    i0,
                    w_scales,
                    bias,
                    jb * 2 * AVX2_LANES,
                )
    return out


def pack_avx2(values: np.ndarray) -> np.ndarray:
    """Lay out ``(n, k) int8`` weights for :func:`int8_matmul_avx2`: widened to int16, channels padded
    to 16 and k to 2, blocks of 8 channels, each step of 2 k stored as 16 contiguous int16."""
    n, k = values.shape
    n_p, k_p = round_up(n, 2 * AVX2_LANES), round_up(k, 2)
    padded = np.zeros((n_p, k_p), np.int16)
    padded[:n, :k] = values
    return np.ascontiguousarray(padded.reshape(n_p // AVX2_LANES, AVX2_LANES, k_p // 2, 2).transpose(0, 2, 1, 3)).reshape(-1)
