"""npformer.CrossEncoder against sentence-transformers' CrossEncoder on random-init cross-encoders
(BERT with one label, RoBERTa with three): ``predict`` scores within 1e-5 (after the activation),
``rank`` the same order and scores; the activation saved in ``config.json`` is read."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_sst2
from helpers import make_checkpoint

import npformer

TOL = 1e-5
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def pairs():
    texts = read_sst2("dev")[0][:24]
    return list(zip(texts[::2], texts[1::2]))


@pytest.mark.parametrize("model_type, num_labels", [("bert", 1), ("roberta", 3)])
def test_predict_and_rank_match_sentence_transformers(tmp_path, pairs, model_type, num_labels):
    import sentence_transformers as st

    make_checkpoint(tmp_path, model_type, "sequence", vocab="bert-base-uncased", num_labels=num_labels, **SMALL)
    ref = st.CrossEncoder(str(tmp_path), device="cpu")
    ours = npformer.CrossEncoder(tmp_path)
    expected = ref.predict(pairs, batch_size=5)
    got = ours.predict(pairs, batch_size=5)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.predict(pairs[0]), ref.predict(pairs[0]), rtol=0, atol=TOL)  # one pair
    if num_labels > 1:
        np.testing.assert_allclose(
            ours.predict(pairs, apply_softmax=True), ref.predict(pairs, apply_softmax=True), rtol=0, atol=TOL
        )
        with pytest.raises(ValueError, match="rank needs a model with one label"):
            ours.rank("q", ["a"])
        return
    query, documents = pairs[0][0], [b for _, b in pairs]
    theirs = ref.rank(query, documents, return_documents=True)
    mine = ours.rank(query, documents, return_documents=True)
    assert [r["corpus_id"] for r in mine] == [r["corpus_id"] for r in theirs]
    assert [r["text"] for r in mine] == [r["text"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in mine], [r["score"] for r in theirs], rtol=0, atol=TOL)
    assert [r["corpus_id"] for r in ours.rank(query, documents, top_k=3)] == [r["corpus_id"] for r in theirs[:3]]


def test_the_saved_activation_is_read(tmp_path, pairs):
    import sentence_transformers as st
    import torch

    make_checkpoint(tmp_path / "src", "bert", "sequence", vocab="bert-base-uncased", num_labels=1, **SMALL)
    ref = st.CrossEncoder(str(tmp_path / "src"), device="cpu", activation_fn=torch.nn.Identity())
    ref.save(str(tmp_path / "saved"))
    ref = st.CrossEncoder(str(tmp_path / "saved"), device="cpu")
    ours = npformer.CrossEncoder(tmp_path / "saved")
    np.testing.assert_allclose(ours.predict(pairs), ref.predict(pairs), rtol=0, atol=TOL)
    assert (ours.predict(pairs) < 0).any()  # raw logits, not sigmoids
    np.testing.assert_allclose(
        ours.predict(pairs, activation_fn="sigmoid"), ref.predict(pairs, activation_fn=torch.nn.Sigmoid()), rtol=0, atol=TOL
    )
    with pytest.raises(ValueError, match="not a pair of str"):
        ours.predict([("only one",)])
