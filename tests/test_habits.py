"""Transformers' pipeline habits, written as a user of ``transformers.pipeline`` would write them, each
compared with Transformers 4.57 itself on the same random-init checkpoint (scores within 1e-4):
construction keyword arguments, ``batch_size=`` per call, SQuAD-style dicts, ``text_pair=``, the
deprecated ``return_all_scores`` / ``grouped_entities``, generators in and lazy iterators out,
``pipe.task`` / ``pipe.device``, ``npformer.AutoTokenizer``, and a clear ``TypeError`` for inputs
that are not text (issue "Every habit")."""

from __future__ import annotations

import itertools
import types
import warnings

import numpy as np
import pytest

import npformer
from conftest import read_squad, read_sst2
from helpers import make_checkpoint
from test_pipelines import NER_LABELS, SIZES, assert_same, reference

import transformers


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    made = {}
    for head, extra in (
        ("sequence", {}),
        ("token", dict(id2label=NER_LABELS, label2id={v: k for k, v in NER_LABELS.items()})),
        ("qa", {}),
        ("mlm", {}),
        (None, {}),
    ):
        made[head] = tmp_path_factory.mktemp(head or "base")
        make_checkpoint(
            made[head],
            "bert",
            head,
            vocab="bert-base-cased" if head == "token" else "bert-base-uncased",
            seed=3,
            init_std=0.2,
            **SIZES["bert"],
            **extra,
        )
    return made


def texts(n: int = 9) -> list[str]:
    return read_sst2("dev")[0][:n]


def test_construction_arguments_are_call_defaults(dirs):
    text = "George Washington went to Washington and met Ada Lovelace in London ."
    ours = npformer.pipeline("ner", dirs["token"], aggregation_strategy="simple")
    assert_same(ours(text), reference("ner", dirs["token"], aggregation_strategy="simple")(text))
    assert_same(ours(text, aggregation_strategy="first"), reference("ner", dirs["token"])(text, aggregation_strategy="first"))
    clf = npformer.pipeline("text-classification", dirs["sequence"], top_k=None, function_to_apply="sigmoid")
    theirs = reference("text-classification", dirs["sequence"], top_k=None, function_to_apply="sigmoid")
    assert_same(clf(texts()), theirs(texts()))
    with pytest.raises(TypeError, match="the text-classification pipeline takes no argument 'colour'"):
        npformer.pipeline("text-classification", dirs["sequence"], colour="red")


def test_batch_size_per_call(dirs):
    clf = npformer.pipeline("text-classification", dirs["sequence"], batch_size=4)
    assert_same(clf(texts(), batch_size=2), reference("text-classification", dirs["sequence"])(texts(), batch_size=2))
    assert clf.batch_size == 4  # the call's own batch size did not stick
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        clf(texts(), batch_size=0)


def test_question_answering_takes_squad_dicts(dirs):
    ours, theirs = npformer.pipeline("question-answering", dirs["qa"]), reference("question-answering", dirs["qa"])
    squad = [{"question": q, "context": c} for q, c in read_squad()[:5]]
    assert_same(ours(squad[0]), theirs(squad[0]))
    assert_same(ours(squad), theirs(squad))
    got = ours(d for d in squad)
    assert isinstance(got, types.GeneratorType)
    assert_same(list(got), list(theirs(d for d in squad)))
    with pytest.raises(ValueError, match="input 1 must be a dict with 'question' and 'context' strings"):
        ours([squad[0], {"question": "only a question"}])


def test_text_pair_and_the_deprecated_spellings(dirs):
    clf, theirs = npformer.pipeline("text-classification", dirs["sequence"]), reference("text-classification", dirs["sequence"])
    assert_same(clf("a fine film", text_pair="it drags"), theirs("a fine film", text_pair="it drags"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for inputs in ("a fine film", texts(4), {"text": "a", "text_pair": "b"}):
            assert_same(clf(inputs, return_all_scores=True), theirs(inputs, return_all_scores=True))
            assert_same(clf(inputs, return_all_scores=False), theirs(inputs, return_all_scores=False))
        text = "George Washington went to Washington ."
        ner, ner_theirs = npformer.pipeline("ner", dirs["token"]), reference("ner", dirs["token"])
        assert_same(ner(text, grouped_entities=True), ner_theirs(text, grouped_entities=True))
        assert_same(
            ner(text, grouped_entities=True, ignore_subwords=True), ner_theirs(text, grouped_entities=True, ignore_subwords=True)
        )
    with pytest.warns(FutureWarning, match="return_all_scores is deprecated"):
        clf("a fine film", return_all_scores=True)


def test_a_generator_gives_a_lazy_iterator(dirs):
    clf = npformer.pipeline("text-classification", dirs["sequence"], batch_size=3)
    expected = reference("text-classification", dirs["sequence"])(texts())
    out = clf(t for t in texts())
    assert isinstance(out, types.GeneratorType)
    assert_same(list(out), expected)
    endless = (texts()[i % 9] for i in itertools.count())  # never ends: only what is taken is computed
    assert_same(list(itertools.islice(clf(endless), 5)), expected[:5])


def test_task_device_and_auto_tokenizer(dirs):
    clf = npformer.pipeline("sentiment-analysis", dirs["sequence"])
    theirs = transformers.pipeline("sentiment-analysis", model=str(dirs["sequence"]), device="cpu")
    assert clf.task == theirs.task == "sentiment-analysis"
    assert clf.device == "cpu" and str(theirs.device) == "cpu"
    tok = npformer.AutoTokenizer.from_pretrained(dirs["sequence"])
    ref = transformers.AutoTokenizer.from_pretrained(dirs["sequence"])
    assert tok("a fine film")["input_ids"].tolist() == [ref("a fine film")["input_ids"]]


@pytest.mark.parametrize("bad", [None, 42, float("nan"), b"abc", True])
@pytest.mark.parametrize("task", ["text-classification", "ner", "question-answering"])
def test_inputs_that_are_not_text_are_a_type_error(dirs, task, bad):
    """Issue: None -> "'NoneType' object is not iterable"; b"abc" -> "got int" (it iterated the bytes)."""
    head = {"text-classification": "sequence", "ner": "token", "question-answering": "qa"}[task]
    pipe = npformer.pipeline(task, dirs[head])
    with pytest.raises(TypeError, match=rf"the \S+ pipeline takes .* got {type(bad).__name__}$"):
        pipe(bad)
    np.testing.assert_equal(
        len(pipe("a fine film") if task != "question-answering" else pipe(question="what?", context="a fine film")) > 0, True
    )


def test_tokenizer_options_where_transformers_takes_them(dirs):
    """fill-mask's tokenizer_kwargs, feature extraction's tokenize_kwargs (padding="max_length" gives
    the padded positions' states too), padding= on text classification and question answering."""
    long_text = "the film is " + "very " * 600 + "[MASK] ."
    fill, fill_theirs = npformer.pipeline("fill-mask", dirs["mlm"]), reference("fill-mask", dirs["mlm"])
    options = {"truncation": True, "max_length": 12, "padding": "max_length"}
    masked = "a [MASK] film , truly ."
    assert_same(fill(masked, tokenizer_kwargs=options), fill_theirs(masked, tokenizer_kwargs=options))
    with pytest.raises(ValueError, match="no mask token"):  # the mask lies beyond the kept window
        fill(long_text, tokenizer_kwargs={"truncation": True})
    with pytest.raises(TypeError, match="not 'add_special_tokens'"):
        fill(masked, tokenizer_kwargs={"add_special_tokens": False})
    with pytest.raises(ValueError, match="truncation given twice"):
        fill(masked, truncation=True, tokenizer_kwargs={"truncation": True})

    fe, fe_theirs = npformer.pipeline("feature-extraction", dirs[None]), reference("feature-extraction", dirs[None])
    for kwargs in ({"padding": "max_length", "max_length": 16}, {"padding": True}, {"truncation": True, "max_length": 5}):
        ours = np.array(fe("a fine film", tokenize_kwargs=kwargs))
        theirs = np.array(fe_theirs("a fine film", tokenize_kwargs=kwargs))
        assert ours.shape == theirs.shape, kwargs
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.array(fe("a fine film", tokenize_kwargs={"padding": "max_length", "max_length": 16})).shape[1] == 16

    clf = npformer.pipeline("text-classification", dirs["sequence"])
    clf_theirs = reference("text-classification", dirs["sequence"])
    assert_same(
        clf(texts(4), padding="max_length", max_length=64),
        clf_theirs(texts(4), padding="max_length", max_length=64, truncation=True),
    )
    with pytest.raises(ValueError, match="unknown padding strategy 'sideways'"):
        clf(texts(4), padding="sideways")
    qa, qa_theirs = npformer.pipeline("question-answering", dirs["qa"]), reference("question-answering", dirs["qa"])
    q, c = read_squad()[0]
    assert_same(qa(question=q, context=c, padding="max_length"), qa_theirs(question=q, context=c, padding="max_length"))


def test_save_pretrained_loads_back_the_same_model(dirs, tmp_path):
    clf = npformer.pipeline("text-classification", dirs["sequence"])
    theirs = reference("text-classification", dirs["sequence"])
    clf.save_pretrained(tmp_path / "copy")
    again = npformer.pipeline("text-classification", tmp_path / "copy")
    assert_same(again(texts()), theirs(texts()))
    theirs.save_pretrained(tmp_path / "theirs")  # what Transformers writes, npformer reads back too
    assert_same(npformer.pipeline("text-classification", tmp_path / "theirs")(texts()), theirs(texts()))
    with pytest.raises(FileExistsError, match="already holds config.json; pass overwrite=True"):
        clf.save_pretrained(tmp_path / "copy")
    clf.save_pretrained(tmp_path / "copy", overwrite=True)

    int8 = npformer.pipeline("text-classification", dirs["sequence"], dtype="int8")
    int8.save_pretrained(tmp_path / "int8")
    reloaded = npformer.pipeline("text-classification", tmp_path / "int8")
    assert reloaded.model.encoder.dtype == "int8"
    assert reloaded(texts(), top_k=None) == int8(texts(), top_k=None)  # the same int8 weights, bit for bit

    loaded = npformer.AutoModelForSequenceClassification.from_pretrained(dirs["sequence"])
    with pytest.raises(ValueError, match="runs a model you loaded yourself"):
        npformer.pipeline("text-classification", loaded, tokenizer=dirs["sequence"]).save_pretrained(tmp_path / "x")
