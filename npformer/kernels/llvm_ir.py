"""What the hand-written micro-kernels share: CPU features and the kernel family (``NPFORMER_ISA``:
``avx512``, ``avx2``, or unset for the best the CPU has), tile sizes, packed-layout strides and
LLVM IR helpers. Numba has no vector types, so the float32 FMA kernel (:mod:`gemm_f32`) and the
int8 VNNI kernel (:mod:`gemm_int8`) are written as LLVM IR in Numba intrinsics; every constant
they agree on is defined here once.
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
import numba.core.config
from llvmlite import ir
from llvmlite.ir.types import _BaseFloatType

from npformer.kernels.jit import njit
from npformer.kernels import layout
from npformer.kernels.layout import LANES, MR, NR, VNNI_K  # noqa: F401 (the int8 layout, fixed whatever the ISA)
from npformer.runtime import ISAS, requested_isa

CPU_FEATURES = frozenset(llvm_binding.get_host_cpu_features().flatten().split(","))


def select_isa(requested: str, features: frozenset) -> str:
    """The kernel family to use: ``NPFORMER_ISA`` (``avx512`` / ``avx2``) when the CPU has it, else
    the best the CPU has; ``"portable"`` (NumPy's BLAS and the portable int8 kernel) without AVX2.
    Raises ``ValueError`` (naming the variable) for an unknown value or one the CPU lacks."""
    requested = requested_isa(requested)
    has = {"avx512": "+avx512f" in features, "avx2": "+avx2" in features and "+fma" in features}
    if requested and not has[requested]:
        raise ValueError(f"NPFORMER_ISA={requested!r}: this CPU has no {requested.upper()}")
    return requested or next((isa for isa in ISAS if has[isa]), "portable")


ISA = select_isa(requested_isa(), CPU_FEATURES)
if ISA == "avx2" and "+avx512f" in CPU_FEATURES:
    # Forced AVX2 on an AVX-512 CPU: Numba compiles every kernel for Haswell (AVX2 + FMA), so that
    # this path's code is what an AVX2-only CPU runs. Takes effect if no Numba code has been
    # compiled in this process yet (set NPFORMER_ISA before starting Python).
    numba.core.config.CPU_NAME, numba.core.config.CPU_FEATURES = "haswell", ""
HAS_AVX512 = ISA == "avx512"  # 512-bit kernels (zmm)
HAS_VNNI = HAS_AVX512 and "+avx512vnni" in CPU_FEATURES  # int8 vpdpbusd GEMM
HAS_BF16 = HAS_AVX512 and "+avx512bf16" in CPU_FEATURES  # bfloat16 vdpbf16ps GEMM (dtype="bfloat16")
HAS_AVX2_INT8 = ISA == "avx2"  # int8 vpmaddwd GEMM on int16 pairs
PACKED_F32 = ISA != "portable"  # the packed float32 FMA GEMM (else NumPy's BLAS)
# The float32 micro-kernel's vectors: 16 lanes in zmm registers, 8 in ymm (AVX2); its tile is up to
# F32_MR rows x two vectors: 14 x 2 accumulators, two weights and a broadcast fill 31 of AVX-512's 32
# vector registers, 4 x 2 + 3 fill 11 of AVX2's 16 (8 rows would need 19).
F32_LANES = 16 if HAS_AVX512 else 8
F32_NR = 2 * F32_LANES
F32_MR = 14 if HAS_AVX512 else 4
VNNI_MR = 12  # int8 VNNI widest tile: activation rows x 32 channels (24 zmm accumulators; then 8 and 4 rows)
AVX2_MR = 4  # int8 AVX2 tile: activation rows x 16 output channels (8 int32 accumulators)
F32_ROW_TILE = 168  # float32 GEMM: at most this many activation rows stay in L2 while the cores split channel blocks
INT8_ROW_TILE = 240  # int8 GEMM: the same, for 1-byte activations (a multiple of 12, 8 and 4 rows)


class BFloat16Type(_BaseFloatType):
    """LLVM's ``bfloat`` (llvmlite's IR builder has no such type): the element of the vectors
    AVX512_BF16's intrinsics take, e.g. ``<32 x bfloat>`` for ``vdpbf16ps``."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self):
        return "bfloat"


BFloat16Type._create_instance()
BFLOAT16 = BFloat16Type()

round_up = njit(inline="always")(layout.round_up)  # for the kernels (and from Python)


def i64(builder, value):
    """Widen an integer IR value to i64 (offsets and strides arrive as the caller's int type)."""
    return builder.sext(value, ir.IntType(64)) if value.type.width < 64 else value


def const(value: int):
    """An i64 IR constant."""
    return ir.Constant(ir.IntType(64), value)


class Args:
    """An intrinsic's codegen arguments by name: ``ints(...)`` widened to i64, ``ptr(name, elem)``
    the first element of an array argument as ``elem*``. ``names`` lists the intrinsic's
    parameters in order (after ``typingctx``)."""

    def __init__(self, context, builder, sig, args, names: tuple[str, ...]):
        if len(names) != len(args):
            raise TypeError(f"{len(names)} names for {len(args)} arguments")
        self.context, self.builder, self.sig, self.args = context, builder, sig, args
        self.index = {name: k for k, name in enumerate(names)}

    def ints(self, *names: str):
        return [i64(self.builder, self.args[self.index[n]]) for n in names]

    def ptr(self, name: str, elem):
        k = self.index[name]
        data = self.context.make_array(self.sig.args[k])(self.context, self.builder, self.args[k]).data
        return self.builder.bitcast(data, elem.as_pointer())


def splat(builder, scalar, vec_type):
    """Broadcast ``scalar`` to every lane of ``vec_type``."""
    i32 = ir.IntType(32)
    undef = ir.Constant(vec_type, ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(i32, vec_type.count), [0] * vec_type.count))


def element_at(builder, ptr, *offsets):
    """``ptr + offsets[0] + offsets[1] + ...`` (i64 IR values, in elements)."""
    total = offsets[0]
    for offset in offsets[1:]:
        total = builder.add(total, offset)
    return builder.gep(ptr, [total])


def vector_at(builder, ptr, offset, vec_type):
    """``ptr + offset`` (in elements) as a pointer to ``vec_type``."""
    return builder.bitcast(element_at(builder, ptr, offset), vec_type.as_pointer())


def counted_loop(builder, name, count, inits, step):
    """Emit ``for t in range(count): values = step(t, values)`` where ``values`` (IR values, e.g. a
    micro-kernel's accumulators) start at ``inits`` and live in phi nodes; ``count`` is an i64.
    Returns the values after the loop (``inits`` when ``count <= 0``), with the builder after it."""
    i64_t = ir.IntType(64)
    zero, one = ir.Constant(i64_t, 0), ir.Constant(i64_t, 1)
    entry = builder.basic_block
    loop, done = builder.append_basic_block(name + ".loop"), builder.append_basic_block(name + ".done")
    builder.cbranch(builder.icmp_signed(">", count, zero), loop, done)
    builder.position_at_end(loop)
    t = builder.phi(i64_t)
    t.add_incoming(zero, entry)
    values = []
    for init in inits:
        value = builder.phi(init.type)
        value.add_incoming(init, entry)
        values.append(value)
    new = step(t, values)
    body_end, t_next = builder.basic_block, builder.add(t, one)
    t.add_incoming(t_next, body_end)
    for value, updated in zip(values, new):
        value.add_incoming(updated, body_end)
    builder.cbranch(builder.icmp_signed("<", t_next, count), loop, done)
    builder.position_at_end(done)
    results = []
    for init, updated in zip(inits, new):
        result = builder.phi(init.type)
        result.add_incoming(init, entry)
        result.add_incoming(updated, body_end)
        results.append(result)
    return results
