"""Exactly one result per input, whatever the batch: over-long texts mixed with short ones give the
same per-input results as one-at-a-time runs (issue: "Never a wrong answer").

The models take at most 64 positions, so "over-long" is a few hundred characters.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import make_checkpoint
from npformer.cli import main

import npformer

MAX_POSITIONS = 64
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
LONG_A = "awful boring film. " * 60  # ~240 tokens: several windows of 64
LONG_B = "the cast of paris was superb " * 40
SHORT = ["a wonderful, moving film", "ok", "", "\u200b", "terrible [MASK] acting", "the [MASK] was fine"]
MIXED = [LONG_A, SHORT[0], LONG_B, SHORT[1], SHORT[2], LONG_A + SHORT[0], SHORT[3]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    made = {}

    def get(head):
        if head not in made:
            d = tmp_path_factory.mktemp(f"m-{head}")
            extra = (
                dict(id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()})
                if head == "token"
                else dict(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
                if head == "sequence"
                else {}
            )
            make_checkpoint(
                d,
                "bert",
                head,
                vocab="bert-base-uncased",
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=40,
                max_position_embeddings=MAX_POSITIONS,
                init_std=0.3,
                **extra,
            )
            made[head] = d
        return made[head]

    return get


def same(a, b):
    """Equal results: arrays within 1e-5 (batch composition changes padding, never the values beyond
    float rounding), everything else identical."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-5)
    else:
        assert a == b


CASES = {
    "text-classification": ("sentiment-analysis", "sequence", MIXED, {}),
    "text-classification-top-k": ("sentiment-analysis", "sequence", MIXED, {"top_k": None}),
    "ner-first-window": ("ner", "token", MIXED, {"aggregation_strategy": "simple"}),
    "ner-stride": ("ner", "token", MIXED, {"aggregation_strategy": "simple", "stride": 16}),
    "fill-mask-truncated": ("fill-mask", "mlm", [SHORT[4], SHORT[5] + " " + LONG_B, SHORT[5]], {"truncation": True}),
    "feature-extraction-truncated": ("feature-extraction", None, MIXED, {"truncation": True, "return_tensors": True}),
    "sentence-embeddings": ("sentence-embeddings", None, MIXED, {}),
    "zero-shot": ("zero-shot-classification", None, MIXED, {"candidate_labels": ["film", "city", "food"]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_equals_one_at_a_time(models, case):
    task, head, texts, kwargs = CASES[case]
    pipe = npformer.pipeline(task, models(head), batch_size=3)
    batched = pipe(texts, **kwargs)
    assert len(batched) == len(texts)
    for text, result in zip(texts, batched, strict=True):
        alone = pipe([text], **kwargs)
        assert len(alone) == 1
        same(result, alone[0])


def test_question_answering_long_contexts(models):
    qa = npformer.pipeline("question-answering", models("qa"), batch_size=2)
    contexts = [LONG_B, "Ada wrote it in 1843.", LONG_A + LONG_B, "Paris."]
    batched = qa(question="Who was superb?", context=contexts, max_seq_len=48, doc_stride=16, top_k=2)
    assert len(batched) == len(contexts)
    for context, result in zip(contexts, batched, strict=True):
        same(result, qa(question="Who was superb?", context=context, max_seq_len=48, doc_stride=16, top_k=2))


def test_similarity_one_score_per_pair(models):
    emb = npformer.pipeline("sentence-embeddings", models(None))
    sims = emb.similarity([LONG_A, SHORT[0], LONG_B], [SHORT[1], LONG_B])
    assert sims.shape == (3, 2)
    assert sims[1, 1] == pytest.approx(emb.similarity(SHORT[0], LONG_B), abs=1e-6)


@pytest.mark.parametrize(
    "task, head",
    [("sentence-embeddings", None), ("feature-extraction", None), ("sentiment-analysis", "sequence"), ("fill-mask", "mlm")],
)
def test_truncation_false_names_the_input(models, task, head):
    pipe = npformer.pipeline(task, models(head))
    texts = ["a [MASK] film", "the [MASK] " + LONG_A]
    with pytest.raises(ValueError, match="input 1 is longer than the model's maximum of"):
        pipe(texts, truncation=False)


def test_embeddings_of_a_truncated_text_equal_its_first_window(models):
    """Truncation keeps the first max_length - 2 tokens: the embedding equals that of the text cut there."""
    emb = npformer.pipeline("sentence-embeddings", models(None))
    tokens = emb.tokenizer.encode(LONG_A)
    cut = LONG_A[: tokens.offsets[MAX_POSITIONS - 3][1]]
    np.testing.assert_allclose(emb(LONG_A), emb(cut), atol=1e-6)


def test_cli_long_text_does_not_shift_the_next(models, capsys):
    model = str(models("sequence"))
    assert main(["sentiment", "-m", model, LONG_A, SHORT[0]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == [LONG_A, SHORT[0]]
    assert main(["sentiment", "-m", model, SHORT[0]]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert rows[1]["label"] == alone["label"] and rows[1]["score"] == pytest.approx(alone["score"], abs=1e-6)
