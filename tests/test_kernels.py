"""Kernels against NumPy references, and the on-disk compilation cache. Each operation is tested on
both backends: the Numba kernels (``ops``) and the NumPy ones (``numpy_ops``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from npformer.kernels import numpy_ops
from npformer.kernels import ops as kernels

BACKENDS = pytest.mark.parametrize("backend", [kernels, numpy_ops], ids=["numba", "numpy"])


@BACKENDS
def test_layer_norm_and_fused_residual(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 50)).astype(np.float32) * 3 + 1
    g, b = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-12) * g + b
    np.testing.assert_allclose(backend.layer_norm(x, g, b, 1e-12), expected, atol=1e-5)
    res, bias = rng.standard_normal((7, 50)).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    y = x - bias - res
    np.testing.assert_allclose(backend.bias_residual_layer_norm_(y, bias, res, g, b, 1e-12), expected, atol=1e-4)


@BACKENDS
@pytest.mark.parametrize("tanh_form", [False, True])
def test_gelu(tanh_form, backend):
    x = np.linspace(-12, 12, 100001, dtype=np.float32).reshape(1, -1)
    bias = np.zeros(x.shape[1], np.float32)
    got = backend.bias_gelu_(x.copy(), bias, tanh_form)
    xd = x.astype(np.float64)
    if tanh_form:
        expected = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)))
    else:
        expected = 0.5 * xd * (1 + np.vectorize(math.erf)(xd / math.sqrt(2)))
    err = np.abs(got - expected)
    print(f"gelu ({backend.__name__}) tanh_form={tanh_form}: max abs error {err.max():.2e}")
    assert err.max() <= 2e-6


@BACKENDS
def test_relu_and_activation_names(backend):
    x = np.linspace(-3, 3, 60, dtype=np.float32).reshape(3, -1)
    bias = np.linspace(-1, 1, x.shape[1], dtype=np.float32)
    np.testing.assert_array_equal(backend.bias_activation_(x.copy(), bias, "relu"), np.maximum(x + bias, 0))
    for name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        np.testing.assert_array_equal(backend.bias_activation_(x.copy(), bias, name), backend.bias_gelu_(x.copy(), bias, True))
    with pytest.raises(KeyError):
        backend.bias_activation_(x.copy(), bias, "swish")


def test_fast_exp():
    from numba import njit

    @njit
    def run(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = kernels._exp(x[i])
        return out

    x = np.linspace(-87, 88, 200001, dtype=np.float32)
    rel = np.abs(run(x).astype(np.float64) / np.exp(x.astype(np.float64)) - 1)
    print(f"exp: max relative error {rel.max():.2e}")
    assert rel.max() <= 1e-6


def reference_attention(q, k, v, mask, num_heads):
    """softmax(Q K^T / sqrt(d) + mask) V in float64 NumPy; a row with every key masked is uniform."""
    batch, seq = mask.shape
    d = q.shape[1] // num_heads

    def heads(a):
        return a.astype(np.float64).reshape(batch, seq, num_heads, d).transpose(0, 2, 1, 3)

    scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.sqrt(d)
    scores = np.where(mask[:, None, None, :] != 0, scores, -np.inf)
    with np.errstate(invalid="ignore"):
        probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs = np.where(np.isnan(probs), 1.0, probs)  # every key masked: uniform
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ heads(v)).transpose(0, 2, 1, 3).reshape(batch * seq, -1)
    return context, probs


@BACKENDS
@pytest.mark.parametrize(
    "batch,seq,num_heads,d_head", [(2, 5, 3, 4), (1, 128, 12, 64), (3, 37, 2, 26), (2, 41, 4, 48), (1, 1, 1, 1)]
)
def test_attention(batch, seq, num_heads, d_head, backend):
    rng = np.random.default_rng(seq)
    q, k, v = (rng.standard_normal((batch * seq, num_heads * d_head)).astype(np.float32) for _ in range(3))
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq // 2 + 1 :] = 0  # padding
    if batch > 2:
        mask[2] = 0  # nothing to attend to
    probs = np.empty((batch, num_heads, seq, seq), np.float32)
    context = backend.attention(q, k, v, mask, num_heads, probs)
    expected_context, expected_probs = reference_attention(q, k, v, mask, num_heads)
    print(
        f"attention max abs diff: context {np.abs(context - expected_context).max():.2e}, "
        f"probs {np.abs(probs - expected_probs).max():.2e}"
    )
    np.testing.assert_allclose(context, expected_context, atol=2e-5)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-6)
    without = backend.attention(q, k, v, mask, num_heads, np.empty((0, 0, 0, 0), np.float32))
    np.testing.assert_array_equal(without, context)


@pytest.mark.parametrize("layout", ["fused", "strided"])
def test_attention_on_views(layout):
    """Queries, keys and values as column slices of one fused projection (rows further apart than
    their width: the vector packing reads them in place) or with a non-unit column stride (the
    element-wise packing): the same bits as on contiguous copies."""
    rng = np.random.default_rng(1)
    batch, seq, num_heads, d_head = 3, 35, 4, 32
    hidden = num_heads * d_head
    fused = rng.standard_normal((batch * seq, 3 * hidden * (2 if layout == "strided" else 1))).astype(np.float32)
    step = 2 if layout == "strided" else 1
    q, k, v = (fused[:, i * hidden * step : (i + 1) * hidden * step : step] for i in range(3))
    mask = np.ones((batch, seq), np.int64)
    mask[1, 20:] = 0
    none = np.empty((0, 0, 0, 0), np.float32)
    copies = [np.ascontiguousarray(a) for a in (q, k, v)]
    np.testing.assert_array_equal(
        kernels.attention(q, k, v, mask, num_heads, none), kernels.attention(*copies, mask, num_heads, none)
    )


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
@pytest.mark.parametrize("rows, n", [(1, 5), (9, 66), (33, 1536)])
def test_activation_and_quantization_in_one_pass(act, rows, n):
    """activations.bias_activation_quantize_ gives the bits of the activation kernel followed by each
    int8 path's row quantizer (VNNI's shifted uint8, AVX2's int16, the portable int8), padding included."""
    from npformer.kernels import activations, gemm_int8
    from npformer.kernels.layout import round_up

    rng = np.random.default_rng(rows * n)
    x = (3 * rng.standard_normal((rows, n))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    if act == "relu":
        x[-1] = -np.abs(x[-1]) - np.abs(bias)  # a row that is all zeros after ReLU: step 1
    done = kernels.bias_activation_(x.copy(), bias, act)
    form = activations.FORMS[numpy_ops.ACTIVATIONS[act]]
    paths = {  # name: (the separate quantizer's result, an empty buffer of its layout, shift)
        "vnni": (gemm_int8.quantize_rows_u8(done, round_up(n, 4)), np.uint8, round_up(rows, 8), round_up(n, 4), 128),
        "avx2": (gemm_int8.quantize_rows_i16(done, round_up(n, 2)), np.int16, round_up(rows, 4), round_up(n, 2), 0),
        "portable": (gemm_int8.quantize_rows(done), np.int8, rows, n, 0),
    }
    for name, ((values, scales), dtype, rows_p, k_p, shift) in paths.items():
        y = x.copy()
        got = activations.bias_activation_quantize_(
            y, bias, form, np.full((rows_p, k_p), 99, dtype), np.ones(rows_p, np.float32), shift
        )
        np.testing.assert_array_equal(y, done, err_msg=f"{name}: activation")
        np.testing.assert_array_equal(got[0], values, err_msg=f"{name}: values")
        np.testing.assert_array_equal(got[1], scales, err_msg=f"{name}: scales")


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
@pytest.mark.parametrize("rows, n", [(1, 5), (9, 66), (33, 1152)])
def test_gated_activation_in_one_pass(act, rows, n):
    """activations.gated_activation_for_ (ModernBERT's GeGLU) gives the bits of the activation kernel
    on the first half times the second half, for a float next weight; for an int8 one the bits of
    quantizing that product per row on each int8 path (padding included), as ops.prepared would;
    the NumPy backend agrees to float32 rounding (its tanh is NumPy's, its erf vectorized otherwise)."""
    from npformer.kernels import activations, gemm_int8
    from npformer.kernels.gemm_f32 import PackedMatrix
    from npformer.kernels.layout import round_up
    from npformer.kernels.linear import QuantizedRows, QuantizedTensor

    rng = np.random.default_rng(rows + n)
    x = (3 * rng.standard_normal((rows, 2 * n))).astype(np.float32)
    expected = kernels.bias_activation_(x[:, :n].copy(), np.zeros(n, np.float32), act) * x[:, n:]
    float_weight = PackedMatrix(rng.standard_normal((8, n)).astype(np.float32))
    np.testing.assert_array_equal(kernels.gated_activation_for_(x, act, float_weight), expected)
    # GELU's 1 + erf cancels for x < -3 (absolute error ~1e-6 in either backend), the gate (|g| < 15) scales it
    np.testing.assert_allclose(numpy_ops.gated_activation_for_(x, act, float_weight), expected, rtol=1e-5, atol=2e-5)
    ready = kernels.gated_activation_for_(x, act, QuantizedTensor.from_float(float_weight.dense()))
    assert isinstance(ready, QuantizedRows)
    np.testing.assert_array_equal(ready.source, expected)
    form = activations.FORMS[numpy_ops.ACTIVATIONS[act]]
    paths = {  # name: (the separate quantizer's result, an empty buffer of its layout, shift)
        "vnni": (gemm_int8.quantize_rows_u8(expected, round_up(n, 4)), np.uint8, round_up(rows, 8), round_up(n, 4), 128),
        "avx2": (gemm_int8.quantize_rows_i16(expected, round_up(n, 2)), np.int16, round_up(rows, 4), round_up(n, 2), 0),
        "portable": (gemm_int8.quantize_rows(expected), np.int8, rows, n, 0),
    }
    for name, ((values, scales), dtype, rows_p, k_p, shift) in paths.items():
        out = np.empty((rows, n), np.float32)
        got = activations.gated_activation_quantize(
            x, form, out, np.full((rows_p, k_p), 99, dtype), np.ones(rows_p, np.float32), shift
        )
        np.testing.assert_array_equal(out, expected, err_msg=f"{name}: activation")
        np.testing.assert_array_equal(got[0], values, err_msg=f"{name}: values")
        np.testing.assert_array_equal(got[1], scales, err_msg=f"{name}: scales")


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_activation_bits_do_not_depend_on_memory_layout(act):
    """The vectorized loop and the scalar one LLVM keeps beside it (strided rows, or an output that a
    runtime check finds within a few vectors of the input) give the same bits: no reciprocal
    estimate in one and a division in the other (jit.FASTMATH has no ``arcp``)."""
    from npformer.kernels import activations

    rows, n = 9, 66
    rng = np.random.default_rng(3)
    x = (3 * rng.standard_normal((rows, 2 * n))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    contiguous = kernels.bias_activation_(np.ascontiguousarray(x[:, :n]), bias, act)
    np.testing.assert_array_equal(kernels.bias_activation_(x.copy()[:, :n], bias, act), contiguous)
    form = activations.FORMS[numpy_ops.ACTIVATIONS[act]]
    apart = activations.gated_activation(x, form, np.empty((rows, n), np.float32))
    for gap in (0, 1, 16, 100):  # the output right after the input in one buffer
        buffer = np.empty(rows * 3 * n + gap, np.float32)
        inside = buffer[: rows * 2 * n].reshape(rows, 2 * n)
        inside[:] = x
        out = buffer[rows * 2 * n + gap :].reshape(rows, n)
        np.testing.assert_array_equal(activations.gated_activation(inside, form, out), apart, err_msg=f"gap {gap}")


def test_products_read_one_quantization():
    """ops.prepared quantizes activations once for an int8 weight and every product reading it gives
    the bits of quantizing per product; a float weight reads the float activations it came from;
    ops.bias_activation_for_ hands the next product the same bits as the two steps."""
    from npformer.kernels.gemm_f32 import PackedMatrix
    from npformer.kernels.linear import QuantizedRows, QuantizedTensor

    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 96)).astype(np.float32)
    weights = [QuantizedTensor.from_float(rng.standard_normal((m, 96)).astype(np.float32)) for m in (96, 40)]
    bias = rng.standard_normal(96).astype(np.float32)
    ready = kernels.prepared(x, weights[0])
    assert isinstance(ready, QuantizedRows) and ready.shape == x.shape
    for w in weights:
        np.testing.assert_array_equal(kernels.linear(ready, w, bias[: w.shape[0]]), kernels.linear(x, w, bias[: w.shape[0]]))
    dense = rng.standard_normal((24, 96)).astype(np.float32)
    for w in (dense, PackedMatrix(dense)):
        assert kernels.prepared(x, w) is x
        np.testing.assert_array_equal(kernels.linear(ready, w), kernels.linear(x, w))
    with pytest.raises(ValueError, match="cannot multiply"):
        kernels.linear(ready, QuantizedTensor.from_float(dense[:, :48]))
    inner = rng.standard_normal((37, 96)).astype(np.float32)
    for act in ("gelu", "relu"):
        fused_in = inner.copy()
        out = kernels.linear(kernels.bias_activation_for_(fused_in, bias, act, weights[1]), weights[1])
        two_steps = kernels.bias_activation_(inner.copy(), bias, act)
        np.testing.assert_array_equal(fused_in, two_steps)
        np.testing.assert_array_equal(out, kernels.linear(two_steps, weights[1]))
    strided = np.repeat(inner, 2, axis=1)[:, ::2]  # not contiguous: the two kernels one after the other
    two_steps = kernels.bias_activation_(np.repeat(inner, 2, axis=1)[:, ::2], bias, "gelu")
    out = kernels.linear(kernels.bias_activation_for_(strided, bias, "gelu", weights[1]), weights[1])
    np.testing.assert_array_equal(strided, two_steps)
    np.testing.assert_array_equal(out, kernels.linear(two_steps, weights[1]))


def test_layer_norm_writes_the_next_products_input():
    """ops.bias_residual_layer_norm_for_ (Add & Norm before the first feed-forward layer) gives the
    layer norm's bits and, for an int8 weight, the quantization ops.prepared would make of them; a
    float weight reads the normalized rows themselves; the NumPy backend agrees (1e-5)."""
    from npformer.kernels.linear import QuantizedRows, QuantizedTensor

    rng = np.random.default_rng(11)
    x, residual = rng.standard_normal((2, 37, 96)).astype(np.float32)
    bias, gamma, beta = rng.standard_normal((3, 96)).astype(np.float32)
    weight = QuantizedTensor.from_float(rng.standard_normal((40, 96)).astype(np.float32))
    two_steps = kernels.bias_residual_layer_norm_(x.copy(), bias, residual, gamma, beta, 1e-12)
    normed, ready = kernels.bias_residual_layer_norm_for_(x.copy(), bias, residual, gamma, beta, 1e-12, weight)
    np.testing.assert_array_equal(normed, two_steps)
    assert isinstance(ready, QuantizedRows) and ready.source is normed
    expected = kernels.prepared(two_steps, weight)
    np.testing.assert_array_equal(ready.values, expected.values)
    np.testing.assert_array_equal(ready.scales, expected.scales)
    np.testing.assert_array_equal(kernels.linear(ready, weight), kernels.linear(two_steps, weight))
    normed, ready = kernels.bias_residual_layer_norm_for_(x.copy(), bias, residual, gamma, beta, 1e-12, weight.dequantize())
    assert ready is normed
    reference, same = numpy_ops.bias_residual_layer_norm_for_(x.copy(), bias, residual, gamma, beta, 1e-12, weight)
    assert same is reference
    np.testing.assert_allclose(reference, two_steps, rtol=1e-5, atol=1e-5)


def test_pre_ln_add_and_norm_writes_the_next_products_input():
    """ops.residual_layer_norm_for_ (a pre-LN block's Add & Norm, ModernBERT's) adds the residual in
    place with NumPy's bits, then gives ops.layer_norm's bits and, for an int8 weight, the
    quantization ops.prepared would make of them; without a residual it leaves x as it is; strided
    rows and float weights take the separate steps; the NumPy backend agrees (1e-5)."""
    from npformer.kernels.linear import QuantizedRows, QuantizedTensor

    rng = np.random.default_rng(12)
    x, residual = rng.standard_normal((2, 45, 96)).astype(np.float32)
    gamma, beta = rng.standard_normal((2, 96)).astype(np.float32)
    weight = QuantizedTensor.from_float(rng.standard_normal((40, 96)).astype(np.float32))
    for res in (residual, None):
        summed = x + res if res is not None else x.copy()
        expected = kernels.layer_norm(summed, gamma, beta, 1e-5)
        quantized = kernels.prepared(expected, weight)
        for rows in (x.copy(), np.repeat(x, 2, axis=1)[:, ::2]):  # contiguous, then strided
            out, ready = kernels.residual_layer_norm_for_(rows, res, gamma, beta, 1e-5, weight)
            assert out is rows
            np.testing.assert_array_equal(out, summed)
            assert isinstance(ready, QuantizedRows)
            np.testing.assert_array_equal(ready.source, expected)
            np.testing.assert_array_equal(ready.values, quantized.values)
            np.testing.assert_array_equal(ready.scales, quantized.scales)
        out, ready = kernels.residual_layer_norm_for_(x.copy(), res, gamma, beta, 1e-5, weight.dequantize())
        np.testing.assert_array_equal(out, summed)
        np.testing.assert_array_equal(ready, expected)
        out, reference = numpy_ops.residual_layer_norm_for_(x.copy(), res, gamma, beta, 1e-5, weight)
        np.testing.assert_array_equal(out, summed)
        np.testing.assert_allclose(reference, expected, rtol=1e-5, atol=1e-5)


def test_vector_packing_moves_values_exactly():
    """pack.copy_vector scales one vector; pack.transpose_tile writes a tile's columns: against NumPy."""
    from npformer.kernels.jit import njit
    from npformer.kernels.llvm_ir import F32_LANES as L
    from npformer.kernels.pack import copy_vector, transpose_tile

    @njit
    def run(dst, src, lds):
        copy_vector(dst, 3, src, 5, np.float32(0.125))
        transpose_tile(dst, 3 + L, src, 2 * lds + 1, lds)

    rng = np.random.default_rng(2)
    src = rng.standard_normal((L + 3, 2 * L + 1)).astype(np.float32)
    dst = np.full(L * L + L + 8, -7.0, np.float32)
    run(dst, src, src.shape[1])
    flat = src.reshape(-1)
    np.testing.assert_array_equal(dst[3 : 3 + L], flat[5 : 5 + L] * np.float32(0.125))
    np.testing.assert_array_equal(dst[3 + L : 3 + L + L * L].reshape(L, L), src[2 : 2 + L, 1 : 1 + L].T)
    assert (dst[:3] == -7).all() and (dst[3 + L + L * L :] == -7).all()


CHILD = """
import json, numpy as np
from npformer import quantization
from npformer.kernels import gemm_f32 as gemm, gemm_int8, ops as kernels
x = np.ones((4, 64), np.float32)
kernels.layer_norm(x, x[0], x[0], 1e-12)
kernels.bias_gelu_(x.copy(), x[0], False)
quantization.QuantizedTensor.from_float(x).matmul(x, x[:, 0])
gemm.PackedMatrix(x).matmul(x)
kernels.attention(x, x, x, np.ones((1, 4), np.int64), 2, np.empty((0, 0, 0, 0), np.float32))
used = (kernels.layer_norm, kernels.bias_gelu_, gemm_int8.quantize_rows, gemm.sgemm_packed, kernels.attention)
print(json.dumps({"misses": sum(sum(d.stats.cache_misses.values()) for d in used),
                  "hits": sum(sum(d.stats.cache_hits.values()) for d in used)}))
"""


def test_cold_process_reuses_compiled_kernels():
    """A second fresh process loads the machine code from the cache instead of compiling."""
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=600
            ).stdout.splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[1]["misses"] == 0 and runs[1]["hits"] >= 5, runs


BITS_CHILD = """
import hashlib, json, numpy as np
from npformer.kernels import gemm_f32, gemm_int8, ops
from npformer.kernels.linear import QuantizedTensor
rng = np.random.default_rng(0)
def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)
x, w, g, b = r(50, 200), r(90, 200), r(200), r(200)
q, k, v = r(40, 64), r(40, 64), r(40, 64)
mask = np.ones((2, 20), np.int64)
mask[1, 13:] = 0
probs = np.empty((2, 4, 20, 20), np.float32)
cos, sin = r(40, 16), r(40, 16)
offsets = np.array([0, 23, 40], np.int64)
out = {
    "layer_norm": ops.layer_norm(x, g, b, 1e-12),
    "residual_layer_norm": ops.bias_residual_layer_norm_(x.copy(), b, x, g, b, 1e-12),
    "gelu": ops.bias_gelu_(x.copy(), b, False),
    "gelu_tanh": ops.bias_gelu_(x.copy(), b, True),
    "attention": ops.attention(q, k, v, mask, 4, probs, r(4, 20, 20)),
    "probs": probs,
    "varlen_attention": ops.varlen_attention(q, k, v, offsets, 4, 5, 32, cos, sin),
    "quantize_rows": gemm_int8.quantize_rows(x)[0],
    "int8": QuantizedTensor.from_float(w).matmul(x, b[:90]),
    "float32": gemm_f32.PackedMatrix(w).matmul(x, b[:90]),
}
used = (ops.layer_norm, ops.attention, ops.varlen_attention, ops.bias_gelu_)
print(json.dumps({
    "bits": {name: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for name, a in out.items()},
    "misses": sum(sum(d.stats.cache_misses.values()) for d in used),
    "hits": sum(sum(d.stats.cache_hits.values()) for d in used),
}))
"""


def test_a_process_that_compiles_the_kernels_computes_what_one_that_loads_them_does(tmp_path):
    """Every kernel's bits in a process that compiles it (an empty cache) and in the next, which
    loads the cached machine code. They differed when LLVM could reassociate sums: the cached
    softmax vectorized its sum otherwise than the one compiled in the running process, so a server
    or a Dask worker could answer other bits than the process that started it (FASTMATH)."""
    env = {**os.environ, "NPFORMER_CACHE": str(tmp_path)}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", BITS_CHILD], capture_output=True, text=True, check=True, timeout=900, env=env
            ).stdout.splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0]["misses"] >= 4 and runs[1]["misses"] == 0 and runs[1]["hits"] >= 4, runs
    assert runs[0]["bits"] == runs[1]["bits"]
