"""Zero-shot classification on an NLI model against Transformers' zero-shot-classification pipeline
(a random-init 3-label NLI classifier: labels in the same order, scores within 1e-4; single and
multi-label, one label, a comma-separated label string, a long text cut first); an embedding model
keeps the similarity method, also under ``zero-shot-similarity``."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_sst2, read_wikitext
from helpers import make_checkpoint

import npformer
from npformer.pipelines.embeddings import ZeroShotClassificationPipeline
from npformer.pipelines.zero_shot import NLIZeroShotPipeline

import transformers

TOL = 1e-4
NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


@pytest.fixture(scope="module", params=[("bert", NLI), ("roberta", {0: "ENTAILMENT", 1: "neutral", 2: "contradiction"})])
def nli(request, tmp_path_factory):
    model_type, labels = request.param
    directory = tmp_path_factory.mktemp(f"nli-{model_type}")
    make_checkpoint(
        directory,
        model_type,
        "sequence",
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        max_position_embeddings=514 if model_type == "roberta" else 512,
    )
    return directory


def assert_same(ours, theirs):
    for a, b in zip(ours if isinstance(ours, list) else [ours], theirs if isinstance(theirs, list) else [theirs], strict=True):
        assert a["sequence"] == b["sequence"] and a["labels"] == b["labels"], (a, b)
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=0, atol=TOL)


def test_nli_zero_shot_matches_transformers(nli):
    ours = npformer.pipeline("zero-shot-classification", nli)
    assert isinstance(ours, NLIZeroShotPipeline)
    ref = transformers.pipeline("zero-shot-classification", model=str(nli), device="cpu")
    texts = read_sst2("dev")[0][:5] + [" ".join(read_wikitext()[:40])]  # the last is cut to the model's length
    labels = ["sports", "politics", "cooking", "movies"]
    for kwargs in ({}, {"multi_label": True}, {"hypothesis_template": "This text is about {}."}):
        assert_same(ours(texts, labels, **kwargs), ref(texts, labels, **kwargs))
    assert_same(ours(texts[0], "sports, movies"), ref(texts[0], "sports, movies"))
    assert_same(ours(texts[:2], ["movies"]), ref(texts[:2], ["movies"]))  # one label: entailment vs contradiction
    with pytest.raises(ValueError, match="at least one label"):
        ours("text", [])
    with pytest.raises(ValueError, match="not able to be formatted"):
        ours("text", ["a"], hypothesis_template="no placeholder")


def test_a_loaded_nli_model_and_the_similarity_method_stay(nli, tmp_path):
    model = npformer.AutoModelForSequenceClassification.from_pretrained(nli)
    assert isinstance(npformer.pipeline("zero-shot-classification", model, tokenizer=nli), NLIZeroShotPipeline)
    make_checkpoint(
        tmp_path,
        "bert",
        None,
        vocab="bert-base-uncased",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=40,
    )
    for task in ("zero-shot-classification", "zero-shot-similarity"):
        pipe = npformer.pipeline(task, tmp_path)
        assert isinstance(pipe, ZeroShotClassificationPipeline)
        out = pipe("a text", ["a", "b"])
        assert sorted(out["labels"]) == ["a", "b"] and abs(sum(out["scores"]) - 1) < 1e-5
    with pytest.raises(ValueError, match="temperature applies to zero-shot classification by similarity"):
        npformer.pipeline("zero-shot-classification", nli)("text", ["a"], temperature=0.1)
