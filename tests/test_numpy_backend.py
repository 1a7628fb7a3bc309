"""The NumPy backend (``backend="numpy"``): its int8 products against the Numba int8 GEMM, the built-in
INT8 model on both backends, and the one-off command line that never loads Numba.

Its float32 operations are tested against references with the Numba kernels (``test_kernels.py``),
its encoders against Transformers (``test_encoder.py``) and its heads through every pipeline
(``test_pipelines.py``), all to the same tolerances as the Numba backend.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import read_sst2
from helpers import float32_checkpoint, make_checkpoint
import npformer
from npformer import QuantizedTensor
from npformer.cli import ONE_OFF_TEXTS
from npformer.kernels import gemm_int8, numpy_ops

SHAPES = [(1, 7, 5), (5, 384, 1536), (33, 1536, 384), (3, 1024, 40), (3, 1025, 40), (2, 3000, 70)]


@pytest.mark.parametrize("rows,k,n", SHAPES)
def test_int8_linear_is_the_int8_gemm(rows, k, n):
    """Exact integer sums (k beyond one exact float32 slice too), the Numba kernels' float32 epilogue:
    the same bits as ``QuantizedTensor.matmul`` (VNNI, AVX2 or portable) and the int64 reference."""
    rng = np.random.default_rng(k)
    x = (rng.standard_normal((rows, k)) * 3).astype(np.float32)
    x[0, :] = 0.0  # an all-zero row: step 1
    w = QuantizedTensor.from_float(rng.standard_normal((n, k)).astype(np.float32))
    bias = rng.standard_normal(n).astype(np.float32)
    got = numpy_ops.int8_linear(x, w, bias)
    np.testing.assert_array_equal(got, w.matmul(x, bias))
    xq, xs = numpy_ops.quantize_rows(x)
    sums = xq.astype(np.int64) @ w.values.astype(np.int64).T
    np.testing.assert_array_equal(got, sums.astype(np.float32) * xs[:, None] * w.scales + bias)


def test_int8_sums_stay_exact_at_their_largest():
    """Every activation and weight at +-127: sums of k * 16129 (3,000 x 16,129 is far beyond float32's
    2^24), still exact in the int64 reference's terms."""
    k = 3000
    x = np.ones((2, k), np.float32)
    x[1, ::2] = -1.0
    w = QuantizedTensor(np.where(np.arange(k) % 3 == 0, -127, 127).astype(np.int8)[None, :].repeat(3, 0), np.ones(3, np.float32))
    xq, xs = numpy_ops.quantize_rows(x)
    assert np.abs(xq).min() == 127
    expected = (xq.astype(np.int64) @ w.values.astype(np.int64).T).astype(np.float32) * xs[:, None]
    np.testing.assert_array_equal(numpy_ops.int8_linear(x, w), expected)


def test_quantize_rows_as_the_kernel():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((500, 96)) * 5).astype(np.float32)
    x[1] = 0.0
    x[2] = np.float32(1e-39)  # subnormal-tiny: step 1, zeros
    x[3, :4] = [0.5, -0.5, 1.5, 127.0]  # ties round to even, as np.rint in the kernel
    q, s = numpy_ops.quantize_rows(x)
    q_kernel, s_kernel = gemm_int8.quantize_rows(x)
    np.testing.assert_array_equal(q, q_kernel.astype(np.float32))
    np.testing.assert_array_equal(s, s_kernel)
    assert s[1] == s[2] == 1.0 and not q[2].any()


def test_builtin_int8_model_on_both_backends(tmp_path):
    """On the built-in INT8 model the two backends' float32 steps round differently (sum order, exp
    and erf polynomials), so an activation now and then quantizes to the next int8 step. Over SST-2
    dev (measured: every label equal, logits within 0.19) they must agree on every label and differ
    less than int8 differs from the float32 model it came from (measured: up to 0.26)."""
    texts, _ = read_sst2("dev")
    texts = texts[:400]

    def logits(model=None, backend="numba"):
        out = npformer.pipeline("sentiment", model, backend=backend, batch_size=32)(texts, top_k=None, function_to_apply="none")
        return np.array([[d["score"] for d in sorted(o, key=lambda d: d["label"])] for o in out])

    numba, numpy_, float32 = logits(), logits(backend="numpy"), logits(float32_checkpoint(tmp_path))
    ours, int8_error = np.abs(numpy_ - numba).max(), np.abs(float32 - numba).max()
    print(f"int8 logits: numpy vs numba backend {ours:.3f}, int8 vs float32 {int8_error:.3f}")
    assert (numpy_.argmax(1) == numba.argmax(1)).all()
    assert ours < int8_error


ONE_OFF = """
import json, sys
from npformer.cli import main
args = json.loads(sys.argv[1])
code = main(args)
print(json.dumps({"exit": code, "numba": "numba" in sys.modules}))
"""


def run_cli(*args: str) -> tuple[list[dict], dict]:
    """``npformer ARGS`` in a fresh interpreter: (its JSON records, {"exit", "numba": whether Numba was imported})."""
    proc = subprocess.run([sys.executable, "-c", ONE_OFF, json.dumps(list(args))], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return lines[:-1], lines[-1]


def test_one_off_command_never_loads_numba(tmp_path):
    texts = ["a gorgeous, witty, seductive movie.", "the plot is a mess and the jokes fall flat."]
    quick, state = run_cli("sentiment", *texts)
    assert state == {"exit": 0, "numba": False}
    fast, state = run_cli("sentiment", "--backend", "numba", *texts)
    assert state == {"exit": 0, "numba": True}
    assert [r["label"] for r in quick] == [r["label"] for r in fast] == ["POSITIVE", "NEGATIVE"]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(quick, fast)) < 1e-2
    _, state = run_cli("sentiment", *["good"] * (ONE_OFF_TEXTS + 1))  # many texts: the fast kernels pay
    assert state["numba"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    from_file, state = run_cli("sentiment", "--input", str(source))
    assert state["numba"] and [{k: r[k] for k in ("text", "label", "score")} for r in from_file] == fast


def test_float32_one_off_agrees_with_numba(tmp_path):
    """A float32 model: the backends differ only by float32 rounding."""
    make_checkpoint(
        tmp_path,
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        init_std=0.2,
    )
    texts = read_sst2("dev")[0][:20]
    quick, state = run_cli("sentiment", "--model", str(tmp_path), "--top-k", "2", *texts)
    assert state == {"exit": 0, "numba": False}
    fast = npformer.pipeline("sentiment", tmp_path)(texts, top_k=2)
    for ours, theirs in zip(quick, fast):
        assert [d["label"] for d in ours["labels"]] == [d["label"] for d in theirs]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(ours["labels"], theirs)) < 1e-5


def test_backend_errors(tmp_path):
    make_checkpoint(
        tmp_path,
        "bert",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=1000,
        max_position_embeddings=64,
    )
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        npformer.AutoModel.from_pretrained(tmp_path, backend="torch")
    with pytest.raises(ValueError, match="unknown backend"):
        npformer.pipeline("feature-extraction", tmp_path, backend="onnx")
    model = npformer.AutoModel.from_pretrained(tmp_path, backend="numpy")
    assert model.backend == "numpy" and model.blas_linears
    with pytest.raises(ValueError, match="backend= applies when loading"):
        npformer.pipeline("feature-extraction", model, tokenizer=Path(tmp_path), backend="numpy")
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "sentiment", "--backend", "torch", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "invalid choice: 'torch'" in proc.stderr
