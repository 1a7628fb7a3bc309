"""Kernels against NumPy references, and the on-disk compilation cache."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from npformer import kernels


def test_layer_norm_and_fused_residual():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 50)).astype(np.float32) * 3 + 1
    g, b = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-12) * g + b
    np.testing.assert_allclose(kernels.layer_norm(x, g, b, 1e-12), expected, atol=1e-5)
    res, bias = rng.standard_normal((7, 50)).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    y = x - bias - res
    np.testing.assert_allclose(kernels.bias_residual_layer_norm_(y, bias, res, g, b, 1e-12), expected, atol=1e-4)


@pytest.mark.parametrize("tanh_form", [False, True])
def test_gelu(tanh_form):
    x = np.linspace(-12, 12, 100001, dtype=np.float32).reshape(1, -1)
    bias = np.zeros(x.shape[1], np.float32)
    got = kernels.bias_gelu_(x.copy(), bias, tanh_form)
    xd = x.astype(np.float64)
    if tanh_form:
        expected = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3)))
    else:
        expected = 0.5 * xd * (1 + np.vectorize(math.erf)(xd / math.sqrt(2)))
    err = np.abs(got - expected)
    print(f"gelu tanh_form={tanh_form}: max abs error {err.max():.2e}")
    assert err.max() <= 2e-6


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


def test_masked_softmax():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((2, 3, 4, 5)).astype(np.float32) * 5
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = np.where(mask[:, None, None, :] == 1, scores, -np.inf)
    expected = np.exp(expected - expected.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(kernels.masked_softmax_(scores.copy(), mask), expected, atol=1e-6)
    everything_masked = kernels.masked_softmax_(scores.copy(), np.zeros((2, 5), dtype=np.int64))
    np.testing.assert_allclose(everything_masked, 0.2)


CHILD = """
import json, numpy as np
from npformer import kernels, quantization
x = np.ones((4, 64), np.float32)
kernels.layer_norm(x, x[0], x[0], 1e-12)
kernels.bias_gelu_(x.copy(), x[0], False)
quantization.QuantizedTensor.from_float(x).matmul(x, x[:, 0])
print(json.dumps({"misses": sum(sum(d.stats.cache_misses.values()) for d in (kernels.layer_norm, kernels.bias_gelu_,
                                                                            quantization.quantize_rows)),
                  "hits": sum(sum(d.stats.cache_hits.values()) for d in (kernels.layer_norm, kernels.bias_gelu_,
                                                                        quantization.quantize_rows))}))
"""


def test_cold_process_reuses_compiled_kernels():
    """A second fresh process loads the machine code from the cache instead of compiling."""
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                                      timeout=600).stdout.splitlines()[-1]) for _ in range(2)]
    assert runs[1]["misses"] == 0 and runs[1]["hits"] >= 3, runs
