"""The float32 packed GEMM: exact layout round trip, products against float64, vectorized code."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import fresh_asm
from npformer.kernels import gemm_f32 as gemm
from npformer.kernels.llvm_ir import F32_MR, F32_NR, HAS_AVX512, ISA


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 60), st.integers(0, 80), st.integers(1, 100), st.booleans(), st.integers(0, 2**31))
def test_packed_matmul_matches_float64(rows, k, n, with_bias, seed):
    """Every row count (14-row tiles and the 8/4/2/1-row remainders), any k, channels padded to 32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + (bias if with_bias else 0)
    got = gemm.PackedMatrix(w).matmul(x, bias)
    assert got.shape == (rows, n) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * max(1, k))


@pytest.mark.parametrize("rows,k,n", [(128, 768, 768), (256, 768, 3072), (300, 3072, 768)])
def test_packed_matmul_at_encoder_shapes(rows, k, n):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((rows, k), np.float32), rng.standard_normal((n, k), np.float32) * 0.05
    bias = rng.standard_normal(n).astype(np.float32)
    got = gemm.PackedMatrix(w).matmul(x, bias)
    diff = np.abs(got - (x.astype(np.float64) @ w.T.astype(np.float64) + bias)).max()
    print(f"packed GEMM {rows}x{k}x{n}: max abs diff vs float64 {diff:.1e}")
    assert diff <= 1e-4


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 400), st.integers(1, 96), st.integers(0, 2**31))
def test_a_row_has_the_same_bits_in_any_product(rows, k, seed):
    """A row's result does not depend on which micro-kernel (14, 8, 4, 2 or 1 rows) or which row tile
    computes it: the whole product, each row alone and a slice starting anywhere agree bit for bit
    (the encoder's batch-independence rests on this)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    packed = gemm.PackedMatrix(rng.standard_normal((40, k)).astype(np.float32))
    bias = rng.standard_normal(40).astype(np.float32)
    whole = packed.matmul(x, bias)
    start = int(rng.integers(0, rows))
    np.testing.assert_array_equal(packed.matmul(x[start:], bias), whole[start:])
    for i in rng.choice(rows, size=min(rows, 12), replace=False):
        np.testing.assert_array_equal(packed.matmul(x[i : i + 1], bias), whole[i : i + 1])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.integers(0, 70), st.integers(0, 2**31))
def test_pack_round_trip(n, k, seed):
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    np.testing.assert_array_equal(gemm.PackedMatrix(w).dense(), w)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(4, 6\)"):
        gemm.PackedMatrix(np.ones((4, 6), np.float32)).matmul(np.ones((3, 5), np.float32))


@pytest.mark.skipif(ISA == "portable", reason="the register check needs AVX2 or AVX-512 (the micro-kernel is portable)")
def test_micro_kernel_is_register_blocked():
    """The hot loop must be fused multiply-adds with broadcast activations per step of k: 28 on zmm
    (AVX-512: 14 rows x 2 vectors), or 8 on ymm with no zmm instruction anywhere (the AVX2 path,
    ``NPFORMER_ISA=avx2``, compiled for Haswell)."""
    w = gemm.pack_rows(np.ones((F32_NR, 16), np.float32))
    asm = fresh_asm(
        gemm.sgemm_packed, np.ones((8, 16), np.float32), w, np.zeros(F32_NR, np.float32), np.empty((8, F32_NR), np.float32)
    )
    register = "zmm" if HAS_AVX512 else "ymm"
    fmas = re.findall(rf"vfmadd\d+ps\s+[^\n]*%{register}", asm)
    assert len(fmas) >= 2 * F32_MR, f"packed GEMM lost its {register} FMA micro-kernel"
    if not HAS_AVX512:
        assert "zmm" not in asm, "the AVX2 path emitted AVX-512 code"
