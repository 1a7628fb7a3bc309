"""ModernBERT beyond tests/test_architectures.py (which holds every head and surface to Transformers):
the unpadded pass's attention against the plain softmax kernel up to 8,192 tokens (1e-5; global and
sliding-window), a text's result bit-identical alone and in any batch, left padding as Transformers'
eager pass positions it (every hidden state), an input longer than several windows against Transformers, and an
8,192-token input in memory far under its score matrix."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from conftest import read_wikitext
from helpers import assert_close, make_checkpoint

import npformer
from npformer.kernels import numpy_ops

import torch
import transformers

TOL = 1e-4
SMALL = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=48,
    local_attention=16,
    global_attn_every_n_layers=2,
)


def plain_rows(q, k, v, rows, num_heads, window):
    """The plain softmax attention of the given query rows of one sequence, in float64."""
    n, hidden = q.shape
    d = hidden // num_heads
    out = np.empty((len(rows), hidden))
    for h in range(num_heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[rows, cols].astype(np.float64) @ k[:, cols].T.astype(np.float64) / np.sqrt(d)
        if window >= 0:
            scores = np.where(np.abs(np.asarray(rows)[:, None] - np.arange(n)[None, :]) <= window, scores, -np.inf)
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        out[:, cols] = (p / p.sum(axis=1, keepdims=True)) @ v[:, cols]
    return out


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_unpadded_attention_equals_the_plain_softmax(backend):
    """Sequences of 1 to 8,192 tokens packed together; global and windows of 0, 3 and 64 tokens on
    each side. Up to 600 tokens every row against the padded kernel with its window bias; at 8,192
    a sample of rows against a float64 plain softmax."""
    from npformer.kernels import ops

    kernels = ops if backend == "numba" else numpy_ops
    rng = np.random.default_rng(0)
    heads, d = 2, 16
    lengths = [1, 7, 130, 600, 8192]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    q, k, v = (rng.standard_normal((offsets[-1], heads * d), dtype=np.float32) for _ in range(3))
    for window in (-1, 0, 3, 64):
        out = kernels.varlen_attention(q, k, v, offsets, heads, window, 128)
        for s, n in enumerate(lengths):
            a, b = offsets[s], offsets[s + 1]
            if n <= 600:
                bias = None
                if window >= 0:
                    near = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= window
                    bias = np.ascontiguousarray(
                        np.broadcast_to(np.where(near, 0, np.finfo(np.float32).min).astype(np.float32), (heads, n, n))
                    )
                expected = kernels.attention(
                    q[a:b], k[a:b], v[a:b], np.ones((1, n), np.int64), heads, np.empty((0, 0, 0, 0), np.float32), bias
                )
                np.testing.assert_allclose(out[a:b], expected, rtol=0, atol=1e-5)
            else:
                rows = [0, 1, 63, 64, 4095, 4096, 8000, n - 1]
                expected = plain_rows(q[a:b], k[a:b], v[a:b], rows, heads, window)
                np.testing.assert_allclose(out[a:b][rows], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("head_dim", [24, 64])
def test_rotary_attention_reads_a_fused_projection_in_place(head_dim):
    """The Numba kernel rotates queries and keys as it packs them (whole 16-lane tiles and the
    remainder: head dimensions 24 and 64, sequences of 1 to 300 tokens), reading Q, K and V as
    column views of one fused projection; the NumPy backend rotates whole arrays first. Both within
    1e-5 of each other, global and windowed."""
    from npformer.kernels import ops
    from npformer.models.modernbert import rotary_tables

    rng = np.random.default_rng(1)
    heads, lengths = 3, [1, 17, 40, 300]
    hidden = heads * head_dim
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    qkv = rng.standard_normal((offsets[-1], 3 * hidden), dtype=np.float32)
    q, k, v = qkv[:, :hidden], qkv[:, hidden : 2 * hidden], qkv[:, 2 * hidden :]
    cos, sin = rotary_tables(300, head_dim, 10000.0)
    positions = np.concatenate([np.arange(n) for n in lengths])
    cos, sin = cos[positions], sin[positions]
    for window in (-1, 3):
        got = ops.varlen_attention(q, k, v, offsets, heads, window, 32, cos, sin)
        expected = numpy_ops.varlen_attention(q, k, v, offsets, heads, window, 32, cos, sin)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("modernbert")
    make_checkpoint(directory, "modernbert", None, **SMALL)
    return directory


def test_a_text_is_the_same_alone_and_in_any_batch(model_dir):
    """The unpadded pass runs each text's tokens only: bit-identical results alone, in a batch of
    mixed lengths and in another order (float32 and int8)."""
    texts = [line for line in read_wikitext() if line.strip()][:9]
    tok = npformer.Tokenizer.from_pretrained(model_dir)
    for dtype in ("float32", "int8"):
        model = npformer.AutoModel.from_pretrained(model_dir, dtype=dtype)
        enc = tok(texts, padding=True, truncation=True)
        batch = model(enc["input_ids"], enc["attention_mask"]).last_hidden_state
        order = np.arange(len(texts))[::-1]
        enc_r = tok([texts[i] for i in order], padding=True, truncation=True)
        reversed_batch = model(enc_r["input_ids"], enc_r["attention_mask"]).last_hidden_state
        for i, text in enumerate(texts):
            one = tok(text, truncation=True)
            alone = model(one["input_ids"], one["attention_mask"]).last_hidden_state[0]
            n = alone.shape[0]
            assert np.array_equal(batch[i, :n], alone), (dtype, i)
            assert np.array_equal(reversed_batch[list(order).index(i), :n], alone), (dtype, i)
            assert not batch[i, n:].any()  # padding rows are zeros


def test_left_padding_and_inputs_longer_than_the_window(model_dir):
    """Several windows long, right- and left-padded: within 1e-4 of Transformers' eager pass (which
    places a left-padded text's tokens at their columns: so does the unpadded pass)."""
    reference = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    lines = [line for line in read_wikitext() if len(line.split()) > 60][:3] + ["short"]
    for side in ("right", "left"):
        hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir, padding_side=side)
        enc = hf_tok(lines, padding=True, truncation=True, max_length=200, return_tensors="np")
        assert enc["input_ids"].shape[1] > 4 * SMALL["local_attention"]
        with torch.no_grad():
            ref = reference(
                input_ids=torch.tensor(enc["input_ids"]),
                attention_mask=torch.tensor(enc["attention_mask"]),
                output_hidden_states=True,
            )
        real = enc["attention_mask"].astype(bool)
        for backend in ("numba", "numpy"):
            got = npformer.AutoModel.from_pretrained(model_dir, backend=backend)(
                enc["input_ids"], enc["attention_mask"], output_hidden_states=True
            )
            assert_close(got.last_hidden_state[real], ref.last_hidden_state.numpy()[real], TOL, f"{side}, {backend}")
            assert len(got.hidden_states) == len(ref.hidden_states) == SMALL["num_hidden_layers"] + 1
            for i, (ours, theirs) in enumerate(zip(got.hidden_states, ref.hidden_states, strict=True)):
                assert_close(ours[real], theirs.numpy()[real], TOL, f"hidden state {i}, {side}, {backend}")


def test_an_8192_token_input_runs_in_bounded_memory(tmp_path):
    """8,192 tokens through a global and a local layer: the peak traced memory is a small multiple of
    the activations, far under one layer's (heads, seq, seq) float32 scores (512 MB here)."""
    make_checkpoint(
        tmp_path,
        "modernbert",
        None,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        local_attention=128,
        global_attn_every_n_layers=2,
        max_position_embeddings=8192,
    )
    model = npformer.AutoModel.from_pretrained(tmp_path)
    ids = np.random.default_rng(0).integers(5, 1000, (1, 8192))
    model(ids[:, :64])  # compile the kernels outside the measurement
    tracemalloc.start()
    out = model(ids).last_hidden_state
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    scores = 2 * 8192 * 8192 * 4
    print(f"peak {peak / 2**20:.1f} MB against {scores / 2**20:.0f} MB of scores")
    assert out.shape == (1, 8192, 32) and np.isfinite(out).all()
    assert peak < scores / 20
