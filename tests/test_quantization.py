"""INT8 path: quantization error bounds, the integer kernels, quantized checkpoints, accuracy."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import stsb_embeddings
from helpers import fresh_asm, make_checkpoint, random_batch
from npformer import AutoModel, QuantizedTensor, quantize
from npformer.kernels import gemm_int8 as q
from npformer.kernels import layout
from npformer.kernels.llvm_ir import HAS_AVX2_INT8, HAS_VNNI, VNNI_MR
from npformer.models.auto import AutoModelForSequenceClassification

floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40), elements=floats))
def test_round_trip_error_is_at_most_half_a_step(w):
    qt = QuantizedTensor.from_float(w)
    assert qt.values.dtype == np.int8 and np.abs(qt.values.astype(int)).max(initial=0) <= 127
    err = np.abs(qt.dequantize() - w)
    bound = qt.scales[:, None] / 2 * (1 + 1e-5) + 1e-30
    assert np.all(err <= bound)


def exact_product(xq: np.ndarray, xs: np.ndarray, w: QuantizedTensor) -> np.ndarray:
    """The int64 product of quantized activations ``xq`` (steps ``xs``) and ``w``, dequantized in float64."""
    return (xq.astype(np.int64) @ w.values.astype(np.int64).T).astype(np.float64) * xs[:, None] * w.scales[None, :]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 130), st.integers(1, 70), st.integers(0, 2**31))
def test_int8_kernels_are_exact(rows, k, n_out, seed):
    """Both kernels equal the int64 product of the quantized operands, dequantized (row counts that
    take the VNNI kernel's 12-, 8- and 4-row tiles)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, k)).astype(np.float32) * rng.uniform(0.1, 10)
    w = QuantizedTensor.from_float(rng.standard_normal((n_out, k)).astype(np.float32))
    xq, xs = q.quantize_rows(x)
    bias = rng.standard_normal(n_out).astype(np.float32)
    exact = exact_product(xq, xs, w)
    tol = dict(rtol=1e-6, atol=1e-6 * np.abs(exact).max(initial=1) + 1e-6)
    np.testing.assert_allclose(q.int8_matmul(xq, xs, w.values, w.scales, bias), exact + bias, **tol)
    np.testing.assert_allclose(w.matmul(x), exact, **tol)
    np.testing.assert_allclose(w.matmul(x, bias), exact + bias, **tol)
    # The AVX2 kernel (vpmaddwd; runs on any x86 CPU with AVX2) against the same reference
    packed, scales, n_p, k_p = w.avx2_operands()
    b = np.zeros(n_p, np.float32)
    b[:n_out] = bias
    xi, xs16 = q.quantize_rows_i16(x, k_p)
    avx2 = q.int8_matmul_avx2(xi, xs16, packed, scales, b, np.empty((xi.shape[0], n_p), np.float32))[:rows, :n_out]
    np.testing.assert_allclose(avx2, exact + bias, **tol)
    if HAS_VNNI:  # the same int32 sums and the same float32 steps: the same bits as the VNNI kernel
        packed, sums, scales, n_p, k_p = w.vnni_operands()
        xu, xs8 = q.quantize_rows_u8(x, k_p)
        b = np.zeros(n_p, np.float32)
        b[:n_out] = bias
        vnni = q.int8_matmul_vnni(xu, xs8, packed, sums, scales, b, np.empty((xu.shape[0], n_p), np.float32), k_p)
        assert np.array_equal(vnni[:rows, :n_out], avx2)


@pytest.mark.parametrize("rows", [248, 488, 725])
def test_vnni_row_tiles_and_panels(rows):
    """Inputs longer than one row tile (the VNNI GEMM's 240 rows, split into equal tiles, each copied
    into the micro-kernels' panels; any path's tiles): every row equals the exact product and has
    the bits it has alone."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 200)).astype(np.float32)
    w = QuantizedTensor.from_float(rng.standard_normal((70, 200)).astype(np.float32))
    xq, xs = q.quantize_rows(x)
    exact = exact_product(xq, xs, w)
    whole = w.matmul(x)
    np.testing.assert_allclose(whole, exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max())
    for part in (slice(0, 13), slice(236, 252), slice(rows - 9, rows)):
        assert np.array_equal(w.matmul(x[part]), whole[part])


def test_int8_kernel_is_vectorized():
    """The hot loop must use packed integer multiply-adds, not scalar arithmetic."""
    w = QuantizedTensor.from_float(np.ones((8, 128), np.float32))
    xq, xs = q.quantize_rows(np.ones((4, 128), np.float32))
    portable = fresh_asm(q.int8_matmul, xq, xs, w.values, w.scales, np.zeros(8, np.float32))
    assert re.search(r"vpmaddwd|vpmaddubsw|vpdpbusd|vpdpwssd", portable), "portable int8 kernel is not vectorized"
    if HAS_VNNI:
        packed, sums, scales, n_p, k_p = w.vnni_operands()
        xu, xs = q.quantize_rows_u8(np.ones((4, 128), np.float32), k_p)
        vnni = fresh_asm(
            q.int8_matmul_vnni,
            xu,
            xs,
            packed,
            sums,
            scales,
            np.zeros(n_p, np.float32),
            np.empty((xu.shape[0], n_p), np.float32),
            k_p,
        )
        assert len(re.findall(r"vpdpbusd\s+.*%zmm", vnni)) >= 2 * VNNI_MR, "VNNI kernel lost its zmm vpdpbusd loop"
    if HAS_AVX2_INT8:  # NPFORMER_ISA=avx2 (or an AVX2 CPU): 8 ymm vpmaddwd per step, no AVX-512 code
        packed, scales, n_p, k_p = w.avx2_operands()
        xi, xs = q.quantize_rows_i16(np.ones((4, 128), np.float32), k_p)
        avx2 = fresh_asm(
            q.int8_matmul_avx2, xi, xs, packed, scales, np.zeros(n_p, np.float32), np.empty((xi.shape[0], n_p), np.float32)
        )
        assert len(re.findall(r"vpmaddwd\s+.*%ymm", avx2)) >= 8, "AVX2 kernel lost its ymm vpmaddwd loop"
        assert "zmm" not in avx2, "the AVX2 path emitted AVX-512 code"


TINY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=500, max_position_embeddings=64
)


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta", "electra", "mpnet", "albert"])
def test_int8_encoder_close_to_float32(tmp_path, model_type):
    """Stated bound: cosine(float32, int8) of every token's last hidden state >= 0.99 and the mean
    abs error <= 5% of the mean abs activation, on random weights (init std 0.1)."""
    cfg = (
        TINY
        if model_type != "distilbert"
        else dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=500, max_position_embeddings=64)
    )
    make_checkpoint(tmp_path, model_type, **cfg)
    f32 = AutoModel.from_pretrained(tmp_path)
    i8 = AutoModel.from_pretrained(tmp_path, dtype="int8")
    assert isinstance(i8.layers[0].q_w, QuantizedTensor) and i8.dtype == "int8"
    one_type = model_type in ("roberta", "mpnet")
    ids, mask, types = random_batch(np.random.default_rng(0), 500, 4, 40, type_vocab=1 if one_type else 2)
    a = f32(ids, mask, types).last_hidden_state
    b = i8(ids, mask, types).last_hidden_state
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    rel = np.abs(a - b).mean() / np.abs(a).mean()
    print(f"{model_type} int8 vs float32: min cosine {cos.min():.4f}, mean rel error {rel:.4f}")
    assert cos.min() >= 0.99 and rel <= 0.05


@pytest.mark.parametrize("model_type", ["bert", "albert"])
def test_each_block_takes_the_input_the_last_one_quantized(tmp_path, monkeypatch, model_type):
    """The second Add & Norm of each block writes the next block's int8 Q/K/V input (ALBERT: the
    same shared block again): every block but the first takes it, and the outputs are bit for bit
    those of quantizing each block's input separately."""
    from npformer.models.block import RunState

    make_checkpoint(tmp_path, model_type, **{**TINY, "num_hidden_layers": 3})
    model = AutoModel.from_pretrained(tmp_path, dtype="int8")
    ids, mask, types = random_batch(np.random.default_rng(0), 500, 4, 40, type_vocab=2)
    taken = []
    take = RunState.take_ready
    monkeypatch.setattr(RunState, "take_ready", lambda self, x, w: taken.append(self.ready is not None) or take(self, x, w))
    fused = model(ids, mask, types).last_hidden_state
    assert taken == [False, True, True]
    monkeypatch.setattr(RunState, "take_ready", lambda self, x, w: self.ops.prepared(x.reshape(-1, x.shape[-1]), w))
    assert np.array_equal(model(ids, mask, types).last_hidden_state, fused)


def test_stacked_products_are_the_separate_ones():
    """``ops.linears`` runs int8 weights of whole 32-channel blocks as one stacked product: bit for bit
    the separate products, the weights' values unchanged and held once (views into the stack), a
    replaced weight stacked anew; widths that are not whole blocks run one by one."""
    from npformer.kernels.linear import linears, stacked

    rng = np.random.default_rng(7)
    x = rng.standard_normal((53, 200)).astype(np.float32)
    ws = [QuantizedTensor.from_float(rng.standard_normal((n, 200)).astype(np.float32)) for n in (64, 32, 96)]
    bs = [rng.standard_normal(64).astype(np.float32), None, rng.standard_normal(96).astype(np.float32)]
    values = [w.values.copy() for w in ws]
    separate = [w.matmul(x, b) for w, b in zip(ws, bs)]
    together = linears(x, tuple(ws), tuple(bs))
    assert [a.shape for a in together] == [(53, 64), (53, 32), (53, 96)]
    assert all(np.array_equal(a, b) for a, b in zip(together, separate))
    stack = stacked(tuple(ws))
    assert stack is stacked(tuple(ws)) and stack.shape == (192, 200)
    assert all(np.shares_memory(w.packed, stack.packed) for w in ws)
    assert all(np.array_equal(w.values, v) for w, v in zip(ws, values))
    assert all(np.array_equal(w.matmul(x, b), s) for w, b, s in zip(ws, bs, separate))
    ws[1] = QuantizedTensor.from_float(rng.standard_normal((32, 200)).astype(np.float32))
    assert stacked(tuple(ws)) is not stack
    assert np.array_equal(linears(x, tuple(ws), tuple(bs))[1], ws[1].matmul(x))
    odd = [QuantizedTensor.from_float(rng.standard_normal((n, 200)).astype(np.float32)) for n in (70, 70)]
    assert stacked(tuple(odd)) is None
    assert np.array_equal(linears(x, tuple(odd), (None, None))[0], odd[0].matmul(x))


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_stacked_query_key_value_give_the_same_model_outputs(tmp_path, monkeypatch, model_type):
    """An int8 block's query, key and value products stacked into one give the outputs, bit for bit,
    of the three products run separately."""
    from npformer.kernels import ops
    from npformer.kernels.linear import stacked

    make_checkpoint(tmp_path, model_type, **TINY)
    model = AutoModel.from_pretrained(tmp_path, dtype="int8")
    ids, mask, types = random_batch(np.random.default_rng(1), 500, 3, 30, type_vocab=2)
    calls = []
    stack = ops.linears
    monkeypatch.setattr(ops, "linears", lambda x, ws, bs: calls.append(len(ws)) or stack(x, ws, bs))
    together = model(ids, mask, types).last_hidden_state
    assert calls and set(calls) == {3}
    layer = model.layers[0]
    assert stacked((layer.q_w, layer.k_w, layer.v_w)) is not None
    monkeypatch.setattr(ops, "linears", lambda x, ws, bs: tuple(ops.linear(x, w, b) for w, b in zip(ws, bs)))
    assert np.array_equal(model(ids, mask, types).last_hidden_state, together)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.integers(1, 70), st.integers(0, 2**31))
def test_packed_layout_round_trip(n, k, seed):
    values = np.random.default_rng(seed).integers(-127, 128, size=(n, k)).astype(np.int8)
    np.testing.assert_array_equal(layout.unpack_vnni(layout.pack_vnni(values), n, k), values)


def test_quantized_checkpoint(tmp_path):
    src, dst = tmp_path / "f32", tmp_path / "i8"
    labels = {0: "NEGATIVE", 1: "POSITIVE"}
    make_checkpoint(
        src,
        "bert",
        "sequence",
        vocab="bert-base-uncased",
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    quantize(src, dst)
    size_f32 = (src / "model.safetensors").stat().st_size
    size_i8 = (dst / "model.safetensors").stat().st_size
    print(f"float32 {size_f32} bytes, int8 {size_i8} bytes ({size_i8 / size_f32:.1%})")
    assert size_i8 <= 0.30 * size_f32
    assert (dst / "vocab.txt").exists() and (dst / "config.json").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(dst)
    in_memory = quantize(AutoModelForSequenceClassification.from_pretrained(src))
    assert loaded.encoder.dtype == "int8" and isinstance(loaded.encoder.embeddings.word, QuantizedTensor)
    # Linear weights come packed straight from the file's memory map: no copy at load
    w = loaded.encoder.layers[0].ff1_w
    assert w._values is None and w.shape == (256, 128) and not w.packed.flags.owndata
    ids, mask, types = random_batch(np.random.default_rng(1), 30000, 3, 20)
    # the checkpoint holds exactly what in-memory quantization computes
    np.testing.assert_allclose(loaded(ids, mask, types).logits, in_memory(ids, mask, types).logits, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="already quantized"):
        quantize(dst, tmp_path / "again")


def test_minilm_int8_embeddings(minilm_dir):
    """Real model: mean cosine(float32, int8) >= 0.99 on STS-B dev sentences; Spearman drop <= 0.5 points."""
    (a32, b32, rho32), (a8, b8, rho8) = stsb_embeddings(minilm_dir, "float32"), stsb_embeddings(minilm_dir, "int8")
    cos = np.concatenate([(a32 * a8).sum(1), (b32 * b8).sum(1)])  # vectors are unit length
    print(f"STS-B dev: mean cosine(f32, int8) {cos.mean():.4f}, Spearman f32 {rho32:.2f}, int8 {rho8:.2f}")
    assert cos.mean() >= 0.99
    assert rho32 - rho8 <= 0.5
