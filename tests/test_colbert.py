"""npformer.ColBERT against PyLate's ColBERT (test-only; installed without its index dependencies, see
README) on random-init encoders saved as PyLate models (PyLate adds the ``[Q] ``/``[D] `` marker
tokens to the tokenizer and resizes the embeddings): per-token vectors within 1e-5 with the same
number of tokens (queries padded with ``[MASK]`` to ``query_length``, documents without padding
and punctuation), MaxSim scores within 1e-5 of PyLate's ``colbert_scores`` on each pair, the same
ranking; settings variants (no query expansion, attended expansion tokens, other lengths, a
projection with bias), a RoBERTa (byte-level BPE) base; int8 storage; refusals by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_sst2
from helpers import make_checkpoint

import npformer
from npformer.colbert import colbert_scores, rerank

TOL = 1e-5
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, init_std=0.05)
VARIANTS = {
    "bert": ("bert", {}),
    "bert-attend-expansion": ("bert", dict(attend_to_expansion_tokens=True, query_length=12, document_length=20, bias=True)),
    "bert-no-expansion": ("bert", dict(do_query_expansion=False)),
    "roberta": ("roberta", {}),
}


@pytest.fixture(scope="module")
def texts():
    sentences = read_sst2("dev")[0][:30]
    return [*sentences, "", "   ", "Punctuation... only?!", "word " * 300]


def pylate_model(directory, model_type, **settings):
    from pylate import models

    make_checkpoint(directory / "base", model_type, vocab="bert-base-uncased" if model_type == "bert" else None, **SMALL)
    models.ColBERT(str(directory / "base"), device="cpu", embedding_size=16, **settings).save(str(directory / "colbert"))
    return models.ColBERT(str(directory / "colbert"), device="cpu"), directory / "colbert"


@pytest.mark.parametrize("variant", VARIANTS)
def test_vectors_scores_and_ranking_match_pylate(tmp_path, texts, variant):
    import torch
    from pylate import scores

    ref, directory = pylate_model(tmp_path, *VARIANTS[variant][:1], **VARIANTS[variant][1])
    ours = npformer.ColBERT(directory)
    assert ours.query_prefix_id == ref.query_prefix_id and ours.document_prefix_id == ref.document_prefix_id
    vectors = {}
    for is_query in (True, False):
        theirs = ref.encode(texts, is_query=is_query, batch_size=7)
        mine = ours.encode(texts, is_query=is_query, batch_size=5)
        assert [m.shape for m in mine] == [t.shape for t in theirs]
        for m, t in zip(mine, theirs):
            np.testing.assert_allclose(m, t, rtol=0, atol=TOL)
        vectors[is_query] = theirs, mine
    np.testing.assert_allclose(ours.encode(texts[0]), vectors[True][1][0], rtol=0, atol=0)  # one text: same bits
    queries, documents = vectors[True][0][:6], vectors[False][0]
    expected = np.array(
        [
            [float(scores.colbert_scores(torch.from_numpy(q)[None], torch.from_numpy(d)[None])[0, 0]) for d in documents]
            for q in queries
        ]
    )
    got = colbert_scores(vectors[True][1][:6], vectors[False][1])
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    ranked = ours.rank(texts[0], texts, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-expected[0], kind="stable"))
    assert ranked[0]["text"] == texts[ranked[0]["corpus_id"]]
    np.testing.assert_allclose([r["score"] for r in ranked], np.sort(expected[0])[::-1], rtol=0, atol=TOL)
    assert [r["corpus_id"] for r in ours.rank(texts[0], texts, top_k=3)] == [r["corpus_id"] for r in ranked[:3]]
    reranked = rerank([list(range(len(texts)))], [vectors[True][1][0]], [vectors[False][1]])
    assert [r["id"] for r in reranked[0]] == [r["corpus_id"] for r in ranked]


def test_int8_storage_and_bad_input(tmp_path, texts):
    ref, directory = pylate_model(tmp_path, "bert")
    ours = npformer.ColBERT(directory)
    floats = ours.encode(texts, is_query=False)
    packed = ours.encode(texts, is_query=False, precision="int8")
    assert all(p.dtype == np.int8 for p in packed)
    for p, f in zip(packed, floats):
        np.testing.assert_array_equal(p, np.rint(f * 127).astype(np.int8))
    queries = ours.encode(texts[:4])
    dequantized = [p.astype(np.float32) / 127 for p in packed]
    np.testing.assert_allclose(colbert_scores(queries, packed), colbert_scores(queries, dequantized), rtol=0, atol=1e-5)
    # the quantization error of a unit vector's components (at most 0.5/127 each) bounds the score's
    bound = len(queries[0]) * 16 * 0.5 / 127
    assert np.abs(colbert_scores(queries, packed) - colbert_scores(queries, floats)).max() < bound
    with pytest.raises(ValueError, match="precision"):
        ours.encode("a", precision="binary")
    with pytest.raises(ValueError, match="normalize_embeddings=True"):
        ours.encode("a", precision="int8", normalize_embeddings=False)
    with pytest.raises(ValueError, match="document 1 has no token vectors"):
        colbert_scores(queries, [floats[0], np.zeros((0, 16), np.float32)])
    with pytest.raises(ValueError, match="different widths"):
        colbert_scores(queries, [np.ones((3, 8), np.float32)])


def test_checkpoints_npformer_does_not_run_are_refused_by_name(tmp_path):
    _, directory = pylate_model(tmp_path, "bert")
    with pytest.raises(ValueError, match="a PyLate ColBERT model: npformer.ColBERT"):
        npformer.pipeline("sentence-embeddings", model=directory)
    dense_config = directory / "1_Dense" / "config.json"
    config = json.loads(dense_config.read_text())
    dense_config.write_text(json.dumps({**config, "activation_function": "torch.nn.modules.activation.GELU"}))
    with pytest.raises(ValueError, match="1_Dense/config.json: activation_function .*GELU"):
        npformer.ColBERT(directory)
    modules = json.loads((directory / "modules.json").read_text())
    modules[1]["type"] = "my_package.Projection"
    (directory / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="modules.json: npformer's ColBERT runs .*my_package.Projection"):
        npformer.ColBERT(directory)
    with pytest.raises(ValueError, match="no modules.json"):
        npformer.ColBERT(tmp_path / "base")
