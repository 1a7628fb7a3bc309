"""Vector moves for packing attention operands: a scaled copy of ``F32_LANES`` floats and an
``F32_LANES x F32_LANES`` transpose, as Numba intrinsics (LLVM IR on ``<F32_LANES x float>``).

The attention kernels copy each head's queries and values, and transpose its keys, into the
layouts the packed micro-kernel of :mod:`npformer.kernels.gemm_f32` reads. Written as scalar
loops those copies are not vectorized (Numba cannot prove the arrays apart) and took about 60% of
the attention kernel at SST-2 lengths; here each moves whole vectors. They only move values (the
scale is the one multiplication the scalar copy made), so results are the same bits.

The transpose swaps one bit of the row index with the same bit of the column index per stage
(log2(F32_LANES) stages of ``shufflevector`` on pairs of rows), the classic in-register transpose.
Offsets and strides are in elements; the caller keeps every access inside its arrays.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from npformer.kernels.llvm_ir import F32_LANES, Args, const, splat, vector_at

I32 = ir.IntType(32)


@intrinsic
def copy_vector(typingctx, dst, dst_off, src, src_off, scale):
    """``dst[dst_off : dst_off + F32_LANES] = src[src_off : src_off + F32_LANES] * scale`` (flat
    element offsets into float32 arrays of any shape, C order)."""
    sig = types.none(dst, dst_off, src, src_off, scale)

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.FloatType(), F32_LANES)
        a = Args(context, builder, sig, args, ("dst", "dst_off", "src", "src_off", "scale"))
        dst_off, src_off = a.ints("dst_off", "src_off")
        value = builder.load(vector_at(builder, a.ptr("src", ir.FloatType()), src_off, vec), align=4)
        scale = args[4] if isinstance(args[4].type, ir.FloatType) else builder.fptrunc(args[4], ir.FloatType())
        value = builder.fmul(value, splat(builder, scale, vec))
        builder.store(value, vector_at(builder, a.ptr("dst", ir.FloatType()), dst_off, vec), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _swap_masks(bit: int, lanes: int) -> tuple[list[int], list[int]]:
    """shufflevector masks over (row r, row r + 2**bit) giving the two rows after swapping bit
    ``bit`` of the row index with the same bit of the column index."""
    low, high = [], []
    for c in range(lanes):
        if c >> bit & 1:
            low.append(lanes + (c ^ 1 << bit))  # from row r + 2**bit, column c without the bit
            high.append(lanes + c)
        else:
            low.append(c)
            high.append(c | 1 << bit)  # from row r, column c with the bit
    return low, high


@intrinsic
def transpose_tile(typingctx, dst, dst_off, src, src_off, lds):
    """``dst[dst_off + c * F32_LANES + r] = src[src_off + r * lds + c]`` for ``r, c < F32_LANES``:
    a square tile of rows ``lds`` apart written column by column, each column contiguous."""
    sig = types.none(dst, dst_off, src, src_off, lds)

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        vec = ir.VectorType(f32, F32_LANES)
        a = Args(context, builder, sig, args, ("dst", "dst_off", "src", "src_off", "lds"))
        dst_off, src_off, lds = a.ints("dst_off", "src_off", "lds")
        src_p, dst_p = a.ptr("src", f32), a.ptr("dst", f32)
        rows = [
            builder.load(vector_at(builder, src_p, builder.add(src_off, builder.mul(lds, const(r))), vec), align=4)
            for r in range(F32_LANES)
        ]
        bit = 0
        while 1 << bit < F32_LANES:
            low_mask, high_mask = (ir.Constant(ir.VectorType(I32, F32_LANES), m) for m in _swap_masks(bit, F32_LANES))
            for r in range(F32_LANES):
                if not r >> bit & 1:
                    partner = r | 1 << bit
                    rows[r], rows[partner] = (
                        builder.shuffle_vector(rows[r], rows[partner], low_mask),
                        builder.shuffle_vector(rows[r], rows[partner], high_mask),
                    )
            bit += 1
        for c, column in enumerate(rows):
            builder.store(column, vector_at(builder, dst_p, builder.add(dst_off, const(c * F32_LANES)), vec), align=4)
        return context.get_dummy_value()

    return sig, codegen
