"""npformer.SparseEncoder against sentence-transformers' SparseEncoder (SPLADE) on a random-init
BERT masked LM with the uncased vocabulary (30,522 entries): vectors within 1e-5 with the same
active indices (above 1e-5), ``max_active_dims``, ``decode``, dot-product ``similarity`` and search
hits equal; sum pooling and ``log1p_relu``; a plain ``*ForMaskedLM`` checkpoint; an inference-free model (a
Router with a SparseStaticEmbedding for queries); and the fused
pooling's peak memory on a 32 x 256 batch far under the ``(batch, seq, vocab)`` logits."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from conftest import read_sst2, read_wikitext
from helpers import make_checkpoint

import npformer

TOL = 1e-5
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, init_std=0.05)


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("splade-mlm")
    make_checkpoint(directory, "bert", "mlm", vocab="bert-base-uncased", **SMALL)
    return directory


def saved(mlm, tmp_path, **pooling):
    from sentence_transformers.sparse_encoder import SparseEncoder, models

    model = SparseEncoder(modules=[models.MLMTransformer(str(mlm)), models.SpladePooling(**pooling)], device="cpu")
    model.save(str(tmp_path / "splade"))
    return SparseEncoder(str(tmp_path / "splade"), device="cpu"), tmp_path / "splade"


def dense(ref, texts, **kwargs):
    return ref.encode(texts, batch_size=7, **kwargs).to_dense().numpy()


def assert_same_vectors(ours: np.ndarray, theirs: np.ndarray):
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)
    for a, b in zip(ours, theirs):
        assert set(np.flatnonzero(a > TOL)) == set(np.flatnonzero(b > TOL))


@pytest.mark.parametrize(
    "pooling",
    [dict(pooling_strategy="max"), dict(pooling_strategy="sum"), dict(pooling_strategy="max", activation_function="log1p_relu")],
)
def test_vectors_decode_and_search_match_sentence_transformers(mlm, tmp_path, pooling):
    ref, directory = saved(mlm, tmp_path, **pooling)
    ours = npformer.SparseEncoder(directory)
    texts = read_sst2("dev")[0][:20] + [""]
    expected = dense(ref, texts)
    vectors = ours.encode(texts, batch_size=7)
    assert all(isinstance(v, npformer.SparseVector) for v in vectors)
    assert_same_vectors(np.stack([v.dense() for v in vectors]), expected)
    assert_same_vectors(ours.encode(texts, convert_to_dense=True), expected)
    top = ours.encode(texts, max_active_dims=16, convert_to_dense=True)
    assert_same_vectors(top, dense(ref, texts, max_active_dims=16))
    assert max(len(v.indices) for v in ours.encode(texts, max_active_dims=16)) <= 16
    mine, theirs = ours.decode(vectors[0], top_k=10), ref.decode(ref.encode(texts[0]), top_k=10)
    assert [t for t, _ in mine] == [t for t, _ in theirs]
    np.testing.assert_allclose([w for _, w in mine], [w for _, w in theirs], rtol=0, atol=TOL)
    queries = texts[:3]
    scores = ours.similarity(ours.encode(queries), vectors)
    np.testing.assert_allclose(scores, ref.similarity(ref.encode(queries), ref.encode(texts)).numpy(), rtol=1e-5, atol=1e-4)
    assert [list(np.argsort(-row, kind="stable")[:3]) for row in scores] == [
        list(np.argsort(-row, kind="stable")[:3]) for row in dense(ref, queries) @ expected.T
    ]
    hits = npformer.semantic_search(ours.encode(queries), vectors, top_k=3)  # sparse in, dot products
    assert [[h["corpus_id"] for h in row] for row in hits] == [list(np.argsort(-row, kind="stable")[:3]) for row in scores]
    np.testing.assert_allclose([[h["score"] for h in row] for row in hits], np.sort(scores, axis=1)[:, ::-1][:, :3], rtol=1e-6)


def test_a_plain_masked_lm_and_refused_modules(mlm, tmp_path):
    ref, _ = saved(mlm, tmp_path)
    texts = read_sst2("dev")[0][:6]
    assert_same_vectors(npformer.SparseEncoder(mlm).encode(texts, convert_to_dense=True), dense(ref, texts))
    (tmp_path / "splade" / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]'
    )
    with pytest.raises(ValueError, match="runs MLMTransformer then SpladePooling"):
        npformer.SparseEncoder(tmp_path / "splade")


def test_an_inference_free_model(mlm, tmp_path):
    """sentence-transformers' inference-free SPLADE: a Router whose queries go through a
    SparseStaticEmbedding (random weights here, as IDF weights would be) and whose documents go
    through the masked LM: ``encode_query`` and ``encode_document`` equal its own; the pipeline and
    the server's task inference read the Router."""
    import torch
    from sentence_transformers.models import Router
    from sentence_transformers.sparse_encoder import SparseEncoder, models

    from npformer.pipelines.tasks import task_for_checkpoint

    transformer = models.MLMTransformer(str(mlm))
    static = models.SparseStaticEmbedding(tokenizer=transformer.tokenizer)
    static.weight.data = torch.rand(static.weight.shape, generator=torch.Generator().manual_seed(0))
    router = Router.for_query_document(query_modules=[static], document_modules=[transformer, models.SpladePooling()])
    SparseEncoder(modules=[router], device="cpu").save(str(tmp_path / "free"))
    ref, ours = SparseEncoder(str(tmp_path / "free"), device="cpu"), npformer.SparseEncoder(tmp_path / "free")
    texts = read_sst2("dev")[0][:12] + ["", "Punctuation!! and UPPER case", "word " * 700]
    np.testing.assert_allclose(
        ours.encode_query(texts, convert_to_dense=True), ref.encode_query(texts).to_dense().numpy(), rtol=0, atol=TOL
    )
    assert_same_vectors(ours.encode_document(texts, convert_to_dense=True), dense_documents(ref, texts))
    assert len(ours.encode_query(texts[0], max_active_dims=3).indices) == 3
    assert task_for_checkpoint(tmp_path / "free").name == "sparse-embeddings"
    assert_same_vectors(
        np.stack([v.dense() for v in npformer.pipeline("splade", tmp_path / "free")(texts)]), dense_documents(ref, texts)
    )


def dense_documents(ref, texts):
    return ref.encode_document(texts).to_dense().numpy()


def test_pooling_is_fused_into_the_head(mlm):
    """32 texts of 256 tokens on a 30,522-token vocabulary: the full logits would take 1 GB."""
    ours = npformer.SparseEncoder(mlm)
    texts = [" ".join(read_wikitext()[i : i + 20])[:3000] for i in range(32)]
    ours.encode(texts[:2])  # compile the kernels outside the measurement
    tracemalloc.start()
    vectors = ours.encode(texts, batch_size=32)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full = 32 * 256 * 30522 * 4
    print(f"peak {peak / 2**20:.0f} MB against {full / 2**20:.0f} MB of logits")
    assert len(vectors) == 32 and peak < full / 10
