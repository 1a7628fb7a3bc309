"""Byte-level BPE (GPT-2's vocabulary, as RoBERTa's tokenizer; and one trained here with
``tokenizers``) against Transformers' fast tokenizers: ids, tokens, offsets, special-tokens mask,
word ids and decoding must be identical."""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import VOCABS, read_squad, read_sst2, read_wikitext, require
from npformer import Tokenizer
from npformer.tokenizer.byte_level import CLASS_END

import tokenizers
import transformers

KEYS = dict(return_offsets_mapping=True, return_special_tokens_mask=True)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(ours from vocab.json + merges.txt, ours from the tokenizer.json Transformers writes, reference)."""
    path = require(VOCABS / "gpt2")
    ref = transformers.RobertaTokenizerFast(str(path / "vocab.json"), str(path / "merges.txt"))
    saved = tmp_path_factory.mktemp("gpt2-fast")
    ref.save_pretrained(saved)
    return Tokenizer.from_pretrained(path), Tokenizer.from_pretrained(saved), ref


def assert_same(ours, ref, *args, **kwargs):
    a = ours(*args, **kwargs)
    b = ref(*args, return_tensors="np", **kwargs)
    assert sorted(a) == sorted(b.keys()), args
    for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} differs for {args!r}")
    for i in range(len(b["input_ids"])):
        assert a.tokens(i) == b.tokens(i), args
        assert a.word_ids(i) == b.word_ids(i), args
        assert a.sequence_ids(i) == b.sequence_ids(i), args
    return a


def test_sst2_wikitext_and_added_tokens(gpt2):
    files, fast, ref = gpt2
    texts = (
        read_sst2("dev")[0]
        + read_wikitext()[:1500]
        + [
            "Paris is the <mask> of France.",
            "Paris is the   <mask>of France.",
            "a<s>b</s> c <mask>d",
            "<mask>",
            "  two leading spaces",
            "tabs\tand\nnewlines\r\n end ",
            "naïve café déjà vu",
            "日本語のテキスト",
            "emoji 😀👍🏽 ok",
            "'s 're 've 'll 'd 'm 't don't",
            "1,234.56 and 7e10",
            "\x00\x01 control \u200b zero-width",
            "",
        ]
    )
    for ours in (files, fast):
        for text in texts:
            assert_same(ours, ref, text, **KEYS)
        assert_same(ours, ref, texts[:64], padding=True, **KEYS)


def test_offsets_read_as_the_reference_encodings_list(gpt2):
    """``Encoding.offsets`` keeps two int columns and trims the byte-level spaces only when first
    read; read any way (iterated, indexed, sliced, compared, as an array, concatenated) it is the
    Rust encoding's list of ``(start, end)`` tuples, for single texts and pairs."""
    _, ours, ref = gpt2
    texts = ["Hello  world, it's   fine", "  leading and trailing  ", "naïve café 😀"]
    got = ours(texts, texts[::-1], padding=True)
    want = ref(texts, texts[::-1], padding=True)
    for i in range(len(texts)):
        offsets, expected = got.encodings[i].offsets, want.encodings[i].offsets[: len(got.encodings[i])]
        assert list(offsets) == expected and offsets == expected and expected == offsets
        assert [offsets[k] for k in range(len(offsets))] == expected
        assert offsets[2:-1] == expected[2:-1] and offsets[-1] == expected[-1]
        np.testing.assert_array_equal(np.asarray(offsets), np.array(expected).reshape(-1, 2))
        assert offsets + [(0, 0)] == expected + [(0, 0)] and [(0, 0)] + offsets == [(0, 0)] + expected
        assert repr(offsets) == repr(expected) and offsets != expected[:-1]


def test_offsets_edits_run_on_copies():
    """A pending edit runs once, on copies: the arrays an :class:`Offsets` was made from (a text's
    pieces, shared) keep their values, and every later read sees the edited ones."""
    from array import array

    from npformer.tokenizer.encoding import Offsets

    starts, ends = array("i", [0, 4, 9]), array("i", [3, 8, 12])
    calls = []

    def shift(s, e):
        calls.append(1)
        for k in range(len(s)):
            s[k] += 1

    offsets = Offsets(starts, ends, (shift,))
    assert len(offsets) == 3 and list(offsets) == [(1, 3), (5, 8), (10, 12)]
    assert offsets[1] == (5, 8) and np.asarray(offsets).tolist() == [[1, 3], [5, 8], [10, 12]]
    assert list(starts) == [0, 4, 9] and list(ends) == [3, 8, 12] and calls == [1]


def test_pairs_truncation_and_windows(gpt2):
    files, _, ref = gpt2
    for question, context in read_squad()[:40]:
        assert_same(
            files,
            ref,
            question,
            context,
            truncation="only_second",
            max_length=96,
            stride=32,
            return_overflowing_tokens=True,
            padding="max_length",
            **KEYS,
        )
    words = " ".join(read_wikitext()[:200]).split()
    rng = random.Random(7)
    for _ in range(120):
        a, b = (" ".join(rng.sample(words, rng.randint(0, 30))) for _ in range(2))
        strategy = rng.choice(["longest_first", "only_first", "only_second"])
        files.truncation_side = ref.truncation_side = rng.choice(["right", "left"])
        kwargs = dict(
            truncation=strategy,
            max_length=rng.randint(8, 40),
            stride=rng.randint(0, 4),
            return_overflowing_tokens=True,
            padding="longest",
            **KEYS,
        )
        try:
            ref(a, b, return_tensors="np", **kwargs)
        except BaseException as error:  # noqa: BLE001 - Rust panics are BaseExceptions
            if isinstance(error, KeyboardInterrupt):
                raise
            with pytest.raises(ValueError):
                files(a, b, **kwargs)
            continue
        assert_same(files, ref, a, b, **kwargs)
    files.truncation_side = ref.truncation_side = "right"


def test_decode(gpt2):
    files, _, ref = gpt2
    for text in read_sst2("dev")[0][:100] + ["héllo wörld 😀 <mask> x", "a\u00a0b  c"]:
        ids = ref(text)["input_ids"]
        for skip in (False, True):
            assert files.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    assert files.decode([ref.convert_tokens_to_ids("Ġ")] + ref("😀", add_special_tokens=False)["input_ids"][:1]) == ref.decode(
        [ref.convert_tokens_to_ids("Ġ")] + ref("😀", add_special_tokens=False)["input_ids"][:1]
    )


# Code points unassigned in Python's Unicode data (14.0 on Python 3.11; category Cn) are left out:
# tokenizers' regex engine knows newer Unicode versions, where some are letters (U+13460, Egyptian
# hieroglyphs extended-A, is one since Unicode 16), and splits them otherwise (documented).
pieces = st.one_of(
    st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=8),
    st.sampled_from(
        ["<mask>", " <mask>", "<s>", "  ", " \u00a0", "'s", "'ll", "\r\n", "\u0301", "\U0001f469\u200d\U0001f4bb", "123", " x"]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(pieces, max_size=10).map("".join))
def test_hypothesis_unicode_text(gpt2, text):
    files, _, ref = gpt2
    assert_same(files, ref, text, **KEYS)


@pytest.fixture(scope="module")
def gpt2_prefixed(tmp_path_factory):
    """(ours, reference) for GPT-2's vocabulary with ``add_prefix_space=True``."""
    path = require(VOCABS / "gpt2")
    ref = transformers.RobertaTokenizerFast(str(path / "vocab.json"), str(path / "merges.txt"), add_prefix_space=True)
    saved = tmp_path_factory.mktemp("gpt2-prefixed")
    ref.save_pretrained(saved)
    return Tokenizer.from_pretrained(saved), ref


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.lists(
        st.one_of(st.text(st.characters(max_codepoint=127), max_size=6), st.sampled_from(["'s", " 're", "  x"])), max_size=10
    ).map("".join),
    max_length=st.integers(2, 10),
)
def test_hypothesis_ascii_text(gpt2, gpt2_prefixed, text, max_length):
    """ASCII text takes the fast loop (the ASCII-only GPT-2 regex, one translate per word, the match
    cache) unless a space is added before it; offsets trimmed, truncated too."""
    files, _, ref = gpt2
    assert_same(files, ref, text, **KEYS)
    assert_same(files, ref, [text, "x" + text], truncation=True, max_length=max_length, padding=True, **KEYS)
    prefixed, prefixed_ref = gpt2_prefixed
    assert_same(prefixed, prefixed_ref, text, **KEYS)


def test_no_letter_or_number_beyond_the_scanned_range():
    assert not any(unicodedata.category(chr(cp))[0] in "LN" for cp in range(CLASS_END, 0x110000))


def test_a_bpe_trained_here_with_a_template(tmp_path):
    """A byte-level BPE trained with ``tokenizers`` on WikiText-2, with add_prefix_space and a
    TemplateProcessing post-processor, saved as tokenizer.json only."""
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=True)
    model.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["[CLS]", "[SEP]", "[PAD]", "[MASK]"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    model.train_from_iterator(read_wikitext(), trainer)
    cls, sep = model.token_to_id("[CLS]"), model.token_to_id("[SEP]")
    model.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    model.save(str(tmp_path / "tokenizer.json"))
    ref = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json"),
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    ref.save_pretrained(tmp_path)
    ours = Tokenizer.from_pretrained(tmp_path)
    for text in read_sst2("dev")[0][:200] + ["[CLS] written [MASK] in", " leading space", "x"]:
        assert_same(ours, ref, text, **KEYS)
    assert_same(ours, ref, "a first text", "and its pair", **KEYS)
    ids = ref("some text [MASK] here")["input_ids"]
    assert ours.decode(ids) == ref.decode(ids)


def test_unknown_components_are_refused_by_name(tmp_path):
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]"))
    model.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="the model is 'WordLevel'"):
        Tokenizer.from_pretrained(tmp_path)
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.UnicodeScripts()
    bpe.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="the pre-tokenizer is 'UnicodeScripts'"):
        Tokenizer.from_pretrained(tmp_path)
