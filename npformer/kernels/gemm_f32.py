"""float32 matrix products in Numba: a register-blocked FMA micro-kernel (AVX-512, or AVX2 when
``NPFORMER_ISA=avx2`` or the CPU has no AVX-512) and packed weights.

``y = x @ W.T + b`` for an encoder Linear layer is the BLIS / GotoBLAS scheme (Goto & van de Geijn,
"Anatomy of high-performance matrix multiplication", 2008) cut down to what an encoder needs:

  * the weights are packed once, at load, into blocks of 16 output channels, each block stored
    ``[k][16]`` (one 64-byte vector per step of the reduction), channels padded to 32;
  * the micro-kernel keeps a 14 x 32 tile of ``y`` in 28 zmm accumulators: per step of k it loads
    two weight vectors, broadcasts 14 activations and issues 28 fused multiply-adds (fewer loads
    per FMA than an 8 x 32 tile: 0.72-0.99x its time at encoder shapes on a Xeon, same bits); the
    bias is the accumulators' initial value, so it costs nothing;
  * the two cores split the 32-channel blocks (``prange``); a block's weights stream from L2 while
    a tile of at most 168 activation rows stays there.

It lets the whole forward pass run in one thread pool (Numba's) instead of two that spin against
each other; its speed against NumPy's OpenBLAS and PyTorch is in ``benchmarks/RESULTS.md``
(``bench_gemm.py``). Numba has no vector types, so the micro-kernel is LLVM IR (``llvm.fmuladd`` on
``<16 x float>``: fused where the CPU has FMA, correct everywhere). With AVX2
(:data:`~npformer.kernels.llvm_ir.ISA` ``"avx2"``) the same kernel runs on 8-lane ymm vectors:
blocks of 8 channels, a 4 x 16 tile (AVX2 has 16 vector registers). Without AVX2 the packed path
is not used and Linear layers go through BLAS.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from npformer.kernels.jit import njit
from npformer.kernels.llvm_ir import (
    BFLOAT16,
    F32_LANES,
    F32_MR,
    F32_NR,
    F32_ROW_TILE,
    Args,
    const,
    counted_loop,
    round_up,
    splat,
    vector_at,
)

FMA_ARGS = ("x", "x_off", "ldx", "w", "w_off", "w_block", "k", "out", "o_off", "ldo", "bias", "j_off")


def _fma_kernel(mr):
    """The ``mr x F32_NR`` micro-kernel (``mr`` in 1, 2, 4, 8, 14; NR = 32 with AVX-512, 16 with AVX2)
    as a Numba intrinsic:

    ``out[i0+a, j0:j0+NR] = bias[j0:j0+NR] + sum_t x[i0+a, t] * Wp[t, j0:j0+NR]`` for ``a < mr``,
    ``t < k``, where ``x`` starts at ``x_off`` with row stride ``ldx``, the packed weights of the two
    ``F32_LANES``-channel halves start at ``w_off`` and ``w_off + w_block``, ``out`` starts at
    ``o_off`` with row stride ``ldo`` and ``bias`` at ``j_off`` (all offsets and strides in elements).

    With ``uint32`` ``x`` and weights (AVX512_BF16 only) each element is a pair of bfloat16 values
    (:func:`npformer.kernels.bfloat16.to_bfloat16`, the lower one first) and a step is ``vdpbf16ps``:
    ``acc += x_hi * w_hi + x_lo * w_lo``, products exact in float32 (Intel SDM, VDPBF16PS).
    """

    def kernel(typingctx, x, x_off, ldx, w, w_off, w_block, k, out, o_off, ldo, bias, j_off):
        sig = types.none(x, x_off, ldx, w, w_off, w_block, k, out, o_off, ldo, bias, j_off)
        pairs = x.dtype == types.uint32

        def codegen(context, builder, sig, args):
            f32 = ir.FloatType()
            f16 = ir.VectorType(f32, F32_LANES)
            elem = ir.IntType(32) if pairs else f32
            operand = ir.VectorType(elem, F32_LANES)
            a = Args(context, builder, sig, args, FMA_ARGS)
            x_off, ldx, w_off, w_block, k, o_off, ldo, j_off = a.ints(
                "x_off", "ldx", "w_off", "w_block", "k", "o_off", "ldo", "j_off"
            )
            x_p = builder.gep(a.ptr("x", elem), [x_off])
            w_p = builder.gep(a.ptr("w", elem), [w_off])
            out_p = builder.gep(a.ptr("out", f32), [o_off])
            b_p = builder.gep(a.ptr("bias", f32), [j_off])
            product = _bf16_product(builder) if pairs else _fma_product(builder, f16)
            biases = [builder.load(vector_at(builder, b_p, const(F32_LANES * h), f16), align=4) for h in range(2)]

            def step(t, accs):
                w_t = builder.mul(t, const(F32_LANES))
                ws = [
                    builder.load(vector_at(builder, w_p, builder.add(builder.mul(const(h), w_block), w_t), operand), align=4)
                    for h in range(2)
                ]
                new = []
                for row in range(mr):
                    xa = builder.load(builder.gep(x_p, [builder.add(builder.mul(const(row), ldx), t)]), align=4)
                    xb = splat(builder, xa, operand)
                    new += [product(accs[2 * row + h], xb, ws[h]) for h in range(2)]
                return new

            results = counted_loop(builder, "fma", k, [biases[i % 2] for i in range(mr * 2)], step)
            for row in range(mr):
                for h in range(2):
                    dst = vector_at(builder, out_p, builder.add(builder.mul(const(row), ldo), const(F32_LANES * h)), f16)
                    builder.store(results[2 * row + h], dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    kernel.__name__ = kernel.__qualname__ = f"_fma_{mr}x{F32_NR}"
    return intrinsic(kernel)


def _fma_product(builder, vec):
    """``acc + x * w`` on float32 vectors: ``llvm.fmuladd`` (one rounding where the CPU has FMA)."""
    fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fmuladd.v{F32_LANES}f32")
    return lambda acc, x, w: builder.call(fmuladd, [x, w, acc])


def _bf16_product(builder):
    """``acc + x_hi * w_hi + x_lo * w_lo`` per lane of 16, ``x`` and ``w`` 16 pairs of bfloat16 each (as
    ``<16 x i32>``): AVX512_BF16's ``vdpbf16ps``."""
    f16, pairs = ir.VectorType(ir.FloatType(), 16), ir.VectorType(BFLOAT16, 32)
    dot = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(f16, [f16, pairs, pairs]), "llvm.x86.avx512bf16.dpbf16ps.512"
    )
    return lambda acc, x, w: builder.call(dot, [acc, builder.bitcast(x, pairs), builder.bitcast(w, pairs)])


_fma_wide = _fma_kernel(F32_MR)
_fma_8, _fma_4, _fma_2, _fma_1 = (_fma_wide if mr == F32_MR else _fma_kernel(mr) for mr in (8, 4, 2, 1))
EIGHT_ROWS = F32_MR > 8  # AVX2's widest tile is 4 rows


@njit(inline="always")
def tile_rows(x, x_off, ldx, w, w_off, w_block, k, out, o_off, ldo, bias, j_off, rows):
    """``rows`` activation rows (any number) times one ``F32_NR``-channel block of packed weights,
    by the widest micro-kernel (``F32_MR`` rows: 14, or 4 with AVX2) and then one 8-, 4-, 2- and
    1-row one each for the remainder (see :func:`_fma_kernel`). Every output element is the same
    chain of fused multiply-adds whichever kernel computes it, so the bits do not depend on
    ``rows``."""
    i = 0
    while rows - i >= F32_MR:
        _fma_wide(x, x_off + i * ldx, ldx, w, w_off, w_block, k, out, o_off + i * ldo, ldo, bias, j_off)
        i += F32_MR
    if EIGHT_ROWS and rows - i >= 8:
        _fma_8(x, x_off + i * ldx, ldx, w, w_off, w_block, k, out, o_off + i * ldo, ldo, bias, j_off)
        i += 8
    if rows - i >= 4:
        _fma_4(x, x_off + i * ldx, ldx, w, w_off, w_block, k, out, o_off + i * ldo, ldo, bias, j_off)
        i += 4
    if rows - i >= 2:
        _fma_2(x, x_off + i * ldx, ldx, w, w_off, w_block, k, out, o_off + i * ldo, ldo, bias, j_off)
        i += 2
    if rows - i >= 1:
        _fma_1(x, x_off + i * ldx, ldx, w, w_off, w_block, k, out, o_off + i * ldo, ldo, bias, j_off)


@njit(parallel=True, nogil=True)
def sgemm_packed(x, w_packed, bias, out):
    """``x (rows, k) float32`` C-contiguous times weights packed by :func:`pack_rows`, plus ``bias
    (n_padded,) float32`` -> written to ``out (rows, n_padded) float32`` (C-contiguous), which is
    returned. Parallel over 32-channel blocks. Reference: ``x @ W.T + b`` in float64, in
    ``tests/test_gemm.py`` (rtol 1e-5; 1e-4 absolute at encoder shapes). With ``uint32`` ``x`` and
    weights, ``k`` pairs of bfloat16 each (AVX512_BF16, see :func:`_fma_kernel`): reference in
    ``tests/test_bfloat16.py``."""
    rows, k = x.shape
    n_padded = out.shape[1]
    w_block = F32_LANES * k  # elements of one F32_LANES-channel block
    tiles = -(-rows // F32_ROW_TILE)  # row tiles of equal size: no short last tile streams all weights again
    for tile in range(tiles):
        r0, r1 = tile * rows // tiles, (tile + 1) * rows // tiles
        for jb in prange(n_padded // F32_NR):
            tile_rows(
                x,
                r0 * k,
                k,
                w_packed,
                jb * 2 * w_block,
                w_block,
                k,
                out,
                r0 * n_padded + jb * F32_NR,
                n_padded,
                bias,
                jb * F32_NR,
                r1 - r0,
            )
    return out


@njit(parallel=True, nogil=True)
def bfloat16_pairs(x):
    """``x (rows, k) float32`` rounded to bfloat16 (nearest, ties to even, on the bits, as
    :func:`npformer.kernels.bfloat16.to_bfloat16`) -> ``(rows, k rounded up to even) uint16``, a zero
    after an odd ``k``: the activations of the bfloat16 GEMM (view it as ``uint32`` pairs)."""
    rows, k = x.shape
    out = np.empty((rows, k + k % 2), np.uint16)
    half, one, shift = np.uint32(0x7FFF), np.uint32(1), np.uint32(16)
    for i in prange(rows):
        bits = x[i].view(np.uint32)
        row = out[i]
        for j in range(k):
            u = bits[j]
            row[j] = np.uint16((u + half + ((u >> shift) & one)) >> shift)
        if k % 2:
            row[k] = 0
    return out


def output_buffer(scratch: np.ndarray | None, rows: int, n: int) -> np.ndarray:
    """A ``(rows, n) float32`` array for a product's result: a view into ``scratch`` (a 1-D float32
    buffer) when it is given and large enough, else a new array.

    Why reuse: glibc serves allocations above 32 MB (its largest mmap threshold) with fresh pages
    from the kernel every time, and first-touching them costs more than the product's own writes
    (measured here: 17.6 ms to fill a new 4096 x 3072 float32 array, 0.3 ms for 4096 x 768). The
    encoder keeps one such buffer per thread for the feed-forward activations.
    """
    if scratch is not None and scratch.size >= rows * n:
        return scratch[: rows * n].reshape(rows, n)
    return np.empty((rows, n), np.float32)


def padded_vector(vector: np.ndarray | None, n_padded: int) -> np.ndarray:
    """A per-channel ``vector (n,)`` (a bias, a weight's scales) as the ``(n_padded,) float32`` vector a
    packed kernel reads: the array itself when the channels are aligned (every real model), else a
    zero-padded copy; zeros for None (no bias)."""
    if vector is not None and vector.shape[0] == n_padded:
        return np.ascontiguousarray(vector, dtype=np.float32)
    padded = np.zeros(n_padded, np.float32)
    if vector is not None:
        padded[: vector.shape[0]] = vector
    return padded


def pack_rows(w: np.ndarray) -> np.ndarray:
    """Lay out ``(n, k) float32`` weights (or ``uint32`` bfloat16 pairs) for :func:`sgemm_packed`:
    channels padded to a multiple of ``F32_NR`` with zeros, blocks of ``F32_LANES`` channels (16, or
    8 with AVX2) each stored ``[k][F32_LANES]`` -> ``(n_padded * k,)`` of ``w``'s dtype."""
    n, k = w.shape
    n_p = round_up(n, F32_NR)
    padded = np.zeros((n_p, k), w.dtype)
    padded[:n] = w
    return np.ascontiguousarray(padded.reshape(n_p // F32_LANES, F32_LANES, k).transpose(0, 2, 1)).reshape(-1)


def unpack_rows(packed: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_rows`: ``(n_padded * k,) float32`` -> ``(n, k) float32`` row-major copy."""
    n_p = round_up(n, F32_NR)
    return np.ascontiguousarray(packed.reshape(n_p // F32_LANES, k, F32_LANES).transpose(0, 2, 1).reshape(n_p, k)[:n])


class PackedMatrix:
    """A float32 ``(out, in)`` Linear weight held in :func:`pack_rows`'s layout for the Numba GEMM.

    ``matmul(x, bias)`` computes ``x @ W.T + bias`` for ``x (rows, in) float32`` ->
    ``(rows, out) float32``; ``dense()`` gives back the ``(out, in)`` matrix. The packed copy
    replaces the memory-mapped weight (see :meth:`npformer.weights.Weights.release`), so the model
    holds each weight once.
    """

    def __init__(self, w: np.ndarray):
        if w.ndim != 2:
            raise ValueError(f"a PackedMatrix needs an (out, in) matrix, got shape {w.shape}")
        self.shape = tuple(w.shape)
        self.n_padded = round_up(w.shape[0], F32_NR)
        self.packed = pack_rows(np.asarray(w, dtype=np.float32))

    size = property(lambda self: self.shape[0] * self.shape[1])

    def dense(self) -> np.ndarray:
        """The ``(out, in) float32`` matrix (a new array)."""
        return unpack_rows(self.packed, *self.shape)

    def matmul(self, x: np.ndarray, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
        """``x (rows, in) float32`` -> ``x @ W.T + bias`` as ``(rows, out) float32``; with ``scratch``
        (see :func:`output_buffer`) the result is a view into it. Raises ``ValueError`` on a width
        mismatch."""
        n, k = self.shape
        if x.ndim != 2 or x.shape[1] != k:
            raise ValueError(f"cannot multiply activations of shape {x.shape} by a ({n}, {k}) weight")
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = sgemm_packed(x, self.packed, padded_vector(bias, self.n_padded), output_buffer(scratch, x.shape[0], self.n_padded))
        return out if n == self.n_padded else np.ascontiguousarray(out[:, :n])
