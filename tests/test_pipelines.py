"""npformer.pipeline against transformers.pipeline (4.57.6) on random-init checkpoints and real text.

Labels, words, spans, answers and offsets must be identical; scores within 1e-4.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from conftest import read_squad, read_sst2, read_wikitext
from helpers import make_checkpoint

import npformer

import transformers

TOL = 1e-4
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-ORG", 4: "I-ORG", 5: "B-LOC", 6: "I-LOC", 7: "MISC"}
SIZES = {
    "bert": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96),
    "distilbert": dict(dim=48, n_layers=2, n_heads=4, hidden_dim=96),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(model_type, head) -> directory of a random-init model with the uncased BERT vocab."""
    made = {}

    def get(model_type: str, head: str, **extra):
        key = (model_type, head, repr(sorted(extra.items())))
        if key not in made:
            directory = tmp_path_factory.mktemp(f"{model_type}-{head}")
            make_checkpoint(
                directory, model_type, head, vocab="bert-base-uncased", seed=len(made), init_std=0.2, **SIZES[model_type], **extra
            )
            made[key] = directory
        return made[key]

    return get


def reference(task: str, directory, **kwargs):
    return transformers.pipeline(task, model=str(directory), tokenizer=str(directory), device="cpu", **kwargs)


def assert_same(ours, theirs, path="result"):
    """Recursive comparison: numbers named 'score' within TOL, everything else identical."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), (path, set(ours), set(theirs))
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), (path, ours, theirs)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{path}[{i}]")
    elif (
        isinstance(theirs, (float, np.floating))
        and not float(theirs).is_integer()
        or path.endswith("score")
        or ".scores[" in path
    ):
        assert math.isclose(float(ours), float(theirs), abs_tol=TOL), (path, ours, theirs)
    else:
        assert ours == theirs, (path, ours, theirs)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_text_classification(checkpoints, model_type, backend):
    directory = checkpoints(
        model_type,
        "sequence",
        id2label={0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1, "NEUTRAL": 2},
    )
    texts = read_sst2("dev")[0][:120]
    ours = npformer.pipeline("sentiment-analysis", directory, batch_size=7, backend=backend)
    theirs = reference("sentiment-analysis", directory)
    assert_same(ours(texts), theirs(texts))
    assert_same(ours(texts[0]), theirs(texts[0]))
    for kwargs in [
        dict(top_k=None),
        dict(top_k=2),
        dict(top_k=1),
        dict(function_to_apply="sigmoid"),
        dict(function_to_apply="none", top_k=None),
    ]:
        assert_same(ours(texts[:20], **kwargs), theirs(texts[:20], **kwargs))
        assert_same(ours(texts[3], **kwargs), theirs(texts[3], **kwargs))
    pair = {"text": texts[0], "text_pair": texts[1]}
    assert_same(ours(pair), theirs(pair))


def test_text_classification_multilabel(checkpoints):
    directory = checkpoints(
        "bert",
        "sequence",
        problem_type="multi_label_classification",
        id2label={0: "a", 1: "b", 2: "c", 3: "d"},
        label2id={"a": 0, "b": 1, "c": 2, "d": 3},
    )
    texts = read_sst2("dev")[0][:30]
    assert_same(
        npformer.pipeline("text-classification", directory)(texts, top_k=None),
        reference("text-classification", directory)(texts, top_k=None),
    )


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_token_classification(checkpoints, model_type, strategy, backend):
    directory = checkpoints(model_type, "token", id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()})
    lines = [line for line in read_wikitext() if len(line.split()) > 3][:60]
    ours = npformer.pipeline("ner", directory, batch_size=5, backend=backend)
    theirs = reference("ner", directory)
    assert_same(ours(lines, aggregation_strategy=strategy), theirs(lines, aggregation_strategy=strategy))
    assert_same(
        ours(lines[0], aggregation_strategy=strategy, ignore_labels=[]),
        theirs(lines[0], aggregation_strategy=strategy, ignore_labels=[]),
    )


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_token_classification_stride_long_text(checkpoints, strategy):
    directory = checkpoints("bert", "token", id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()})
    text = " ".join(read_wikitext()[:40])  # far beyond 512 tokens
    ours = npformer.pipeline("ner", directory)(text, aggregation_strategy=strategy, stride=64)
    theirs = reference("ner", directory)(text, aggregation_strategy=strategy, stride=64)
    assert len(theirs) > 10
    assert_same(ours, theirs)
    assert max(e["end"] for e in ours) > 3000  # the windows cover the end of the text


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_question_answering(checkpoints, model_type, backend):
    directory = checkpoints(model_type, "qa")
    squad = read_squad()
    samples = squad[::300][:30]
    long_ones = sorted(squad, key=lambda p: len(p[1]))[-3:]  # contexts beyond max_seq_len
    ours = npformer.pipeline("question-answering", directory, batch_size=4, backend=backend)
    theirs = reference("question-answering", directory)
    for question, context in samples + long_ones:
        assert_same(ours(question=question, context=context), theirs(question=question, context=context))
    for question, context in samples[:5] + long_ones[:1]:
        for kwargs in [
            dict(top_k=3),
            dict(handle_impossible_answer=True),
            dict(max_answer_len=4, top_k=2),
            dict(max_seq_len=128, doc_stride=32, top_k=2),
            dict(align_to_words=False, top_k=2),
        ]:
            assert_same(ours(question=question, context=context, **kwargs), theirs(question=question, context=context, **kwargs))
    questions, contexts = zip(*samples[:6])
    assert_same(ours(question=list(questions), context=list(contexts)), theirs(question=list(questions), context=list(contexts)))


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_fill_mask(checkpoints, model_type, backend):
    directory = checkpoints(model_type, "mlm")
    lines = [line for line in read_wikitext() if 8 < len(line.split()) < 80][:40]
    masked = []
    for line in lines:
        words = line.split()
        words[3] = "[MASK]"
        masked.append(" ".join(words))
    ours = npformer.pipeline("fill-mask", directory, batch_size=6, backend=backend)
    theirs = reference("fill-mask", directory)
    assert_same(ours(masked), theirs(masked))
    assert_same(ours(masked[0], top_k=10), theirs(masked[0], top_k=10))
    two = masked[1].replace(masked[1].split()[6], "[MASK]", 1)
    assert_same(ours(two), theirs(two))
    targets = ["the", "city", "zzzqqq", "river"]
    assert_same(ours(masked[2], targets=targets), theirs(masked[2], targets=targets))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_feature_extraction(checkpoints, backend):
    directory = checkpoints("bert", None)
    texts = read_sst2("dev")[0][:10]
    ours = npformer.pipeline("feature-extraction", directory, batch_size=3, backend=backend)(texts)
    theirs = reference("feature-extraction", directory)(texts)
    for a, b in zip(ours, theirs):
        assert np.array(a).shape == np.array(b).shape
        assert np.abs(np.array(a) - np.array(b)).max() <= TOL


def test_batching_keeps_order_and_results(checkpoints):
    directory = checkpoints("bert", "sequence", id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    texts = read_sst2("dev")[0][:50]
    one = npformer.pipeline("sentiment-analysis", directory, batch_size=1)(texts, top_k=None)
    many = npformer.pipeline("sentiment-analysis", directory, batch_size=16)(texts, top_k=None)
    assert_same(many, one)


NER_KW = dict(id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()})
PIPELINE_ERRORS = {
    "qa-empty-context": ("question-answering", ("bert", "qa"), dict(question="Who?", context=""), "context"),
    "qa-no-context": ("question-answering", ("bert", "qa"), dict(question="Who?"), "context"),
    "qa-doc-stride-too-large": (
        "question-answering",
        ("bert", "qa"),
        dict(question="Who?", context="Nobody.", doc_stride=500),
        "doc_stride",
    ),
    "qa-negative-doc-stride": (
        "question-answering",
        ("bert", "qa"),
        dict(question="Who?", context="Nobody.", doc_stride=-3),
        "doc_stride",
    ),
    "qa-max-seq-len-over-model": (
        "question-answering",
        ("bert", "qa"),
        dict(question="Who?", context="Nobody.", max_seq_len=4096),
        "max_seq_len",
    ),
    "fill-mask-no-mask": ("fill-mask", ("bert", "mlm"), dict(inputs="no mask here"), r"\[MASK\]"),
    "fill-mask-second-input-no-mask": ("fill-mask", ("bert", "mlm"), dict(inputs=["a [MASK].", "none"]), "input 1"),
    "ner-stride-without-aggregation": (
        "ner",
        ("bert", "token"),
        dict(inputs="text", aggregation_strategy="none", stride=16),
        "aggregation",
    ),
    "ner-negative-stride": ("ner", ("bert", "token"), dict(inputs="text", aggregation_strategy="simple", stride=-200), "stride"),
    "ner-non-str-in-list": ("ner", ("bert", "token"), dict(inputs=["fine", 12345]), "text 1 must be a str"),
    "classification-truncation-false": (
        "sentiment-analysis",
        ("bert", "sequence"),
        dict(inputs=["short", "word " * 600], truncation=False),
        "input 1 is longer",
    ),
}


@pytest.mark.parametrize("case", sorted(PIPELINE_ERRORS))
def test_pipeline_errors(checkpoints, case):
    task, (model_type, head), kwargs, message = PIPELINE_ERRORS[case]
    pipe = npformer.pipeline(task, checkpoints(model_type, head, **(NER_KW if head == "token" else {})))
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


@pytest.mark.parametrize(
    "task, head, message",
    [("translation", "mlm", "unknown task"), ("sentiment-analysis", "mlm", "no sequence-classification head")],
)
def test_pipeline_construction_errors(checkpoints, task, head, message):
    with pytest.raises(ValueError, match=message):
        npformer.pipeline(task, checkpoints("bert", head))


@pytest.mark.parametrize("task, head", [("ner", "token"), ("sentiment-analysis", "sequence"), ("feature-extraction", None)])
def test_content_free_texts_as_transformers(checkpoints, task, head):
    """Texts with nothing left after normalization are accepted, as Transformers does: NER gives
    no entity, classification and feature extraction see ``[CLS] [SEP]``."""
    directory = checkpoints("bert", head, **(NER_KW if head == "token" else {}))
    texts = ["", "   ", "\x00\x00", "\u200b"]
    ours = npformer.pipeline(task, directory)(texts)
    theirs = reference(task, directory)(texts)
    if task == "feature-extraction":
        for a, b in zip(ours, theirs, strict=True):
            assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= TOL
    else:
        assert_same(ours, theirs)
    assert all(npformer.Tokenizer.from_pretrained(directory).is_empty(t) for t in texts)


def test_question_longer_than_max_question_len_is_cut(checkpoints):
    qa = npformer.pipeline("question-answering", checkpoints("bert", "qa"))
    question, context = read_squad()[0]
    long_question = " ".join([question] * 20)  # ~200 tokens
    answer = qa(question=long_question, context=context, max_question_len=16)
    assert answer["answer"] == context[answer["start"] : answer["end"]]
    with pytest.raises(ValueError, match="question too long"):
        qa(question=" ".join([question] * 50), context=context, max_question_len=1000)


def test_entropy_against_numpy():
    from npformer.pipelines.base import softmax
    from npformer.pipelines.token_classification import entropy

    rng = np.random.default_rng(0)
    for scale in (0.1, 1.0, 10.0, 80.0):
        logits = rng.normal(size=(50, 9)) * scale
        for row in logits:
            p = np.exp(row - row.max())
            p /= p.sum()
            reference = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0))
            assert entropy(softmax(row)) == pytest.approx(reference, abs=1e-12)
    assert entropy([1.0, 0.0, 0.0]) == 0.0
    assert entropy(np.full(4, 0.25)) == pytest.approx(np.log(4))


@pytest.mark.parametrize("strategy", ["none", "simple", "average"])
def test_token_probabilities_and_entropy(checkpoints, strategy):
    """return_probabilities adds, to the same entities, each one's label distribution (its argmax is
    the label, its max or mean the score) and its entropy."""
    directory = checkpoints("bert", "token", id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()})
    ner = npformer.pipeline("ner", directory)
    texts = read_sst2("dev")[0][:10]
    plain = ner(texts, aggregation_strategy=strategy, ignore_labels=[])
    rich = ner(texts, aggregation_strategy=strategy, ignore_labels=[], return_probabilities=True)
    from npformer.pipelines.token_classification import entropy

    for a, b in zip(plain, rich, strict=True):
        assert [{k: v for k, v in e.items() if k not in ("probabilities", "entropy")} for e in b] == a
        for e in b:
            probs = np.array(list(e["probabilities"].values()))
            assert probs.sum() == pytest.approx(1.0, abs=1e-6) and set(e["probabilities"]) == set(NER_LABELS.values())
            assert e["entropy"] == pytest.approx(entropy(probs)) and 0 <= e["entropy"] <= np.log(len(probs)) + 1e-9
            label = max(e["probabilities"], key=e["probabilities"].get)
            if strategy == "none":
                assert label == e["entity"] and e["score"] == pytest.approx(probs.max())


def test_legacy_layer_norm_names_load_as_transformers_loads_them(checkpoints, tmp_path):
    """A masked LM whose LayerNorm tensors carry TensorFlow-era names (``LayerNorm.gamma`` /
    ``LayerNorm.beta``, still common on the Hub): Transformers renames them at load, and so do we."""
    from safetensors.numpy import load_file, save_file

    source = checkpoints("bert", "mlm")
    shutil.copytree(source, tmp_path / "legacy")
    tensors = load_file(source / "model.safetensors")
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in tensors.items()
    }
    assert sum(k.endswith("LayerNorm.gamma") for k in legacy) == 6  # embeddings, 2 x 2 per layer, MLM transform
    save_file(legacy, tmp_path / "legacy" / "model.safetensors", metadata={"format": "pt"})
    masked = ["the river [MASK] through the old city .", "a [MASK] of bread and a [MASK] of milk"]
    theirs = reference("fill-mask", tmp_path / "legacy")
    assert_same(npformer.pipeline("fill-mask", tmp_path / "legacy")(masked), theirs(masked))
    # both names for one tensor is refused by name, not silently resolved
    save_file(
        {**legacy, "bert.embeddings.LayerNorm.weight": tensors["bert.embeddings.LayerNorm.weight"]},
        tmp_path / "legacy" / "model.safetensors",
    )
    with pytest.raises(ValueError, match="bert.embeddings.LayerNorm.gamma.*LayerNorm.weight"):
        npformer.AutoModelForMaskedLM.from_pretrained(tmp_path / "legacy")
