"""Golden tokenizer examples, written out as Hugging Face tokenizers' own tests do: for short texts
(accents, CJK, punctuation, ``##`` pieces, control and zero-width characters, special tokens in the
text, a pair with truncation), the ids, tokens and offsets ``BertTokenizerFast`` gives (recorded
from transformers 4.57.6 / tokenizers 0.22). They pin behaviour without the reference installed and
show a reader what the tokenizer does. The parity tests in ``test_tokenizer.py`` cover breadth."""

from __future__ import annotations

import pytest

from conftest import VOCABS, require
from npformer import Tokenizer

# (vocabulary, text, text_pair, input_ids, tokens, offsets)
GOLDEN = [
    (
        "uncased",
        "Hello, world!",
        None,
        [101, 7592, 1010, 2088, 999, 102],
        ["[CLS]", "hello", ",", "world", "!", "[SEP]"],
        [(0, 0), (0, 5), (5, 6), (7, 12), (12, 13), (0, 0)],
    ),
    (
        "uncased",
        "Crème brûlée à la française",
        None,
        [101, 13675, 21382, 7987, 9307, 2063, 1037, 2474, 18427, 102],
        ["[CLS]", "cr", "##eme", "br", "##ule", "##e", "a", "la", "francaise", "[SEP]"],
        [(0, 0), (0, 2), (2, 5), (6, 8), (8, 11), (11, 12), (13, 14), (15, 17), (18, 27), (0, 0)],
    ),
    (
        "uncased",
        "unaffable tokenizers",
        None,
        [101, 14477, 20961, 3468, 19204, 17629, 2015, 102],
        ["[CLS]", "una", "##ffa", "##ble", "token", "##izer", "##s", "[SEP]"],
        [(0, 0), (0, 3), (3, 6), (6, 9), (10, 15), (15, 19), (19, 20), (0, 0)],
    ),
    (
        "uncased",
        "北京欢迎你",
        None,
        [101, 1781, 1755, 100, 100, 100, 102],
        ["[CLS]", "北", "京", "[UNK]", "[UNK]", "[UNK]", "[SEP]"],
        [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 0)],
    ),
    (
        "uncased",
        "It's $3.50 (approx.)",
        None,
        [101, 2009, 1005, 1055, 1002, 1017, 1012, 2753, 1006, 22480, 1012, 1007, 102],
        ["[CLS]", "it", "'", "s", "$", "3", ".", "50", "(", "approx", ".", ")", "[SEP]"],
        [(0, 0), (0, 2), (2, 3), (3, 4), (5, 6), (6, 7), (7, 8), (8, 10), (11, 12), (12, 18), (18, 19), (19, 20), (0, 0)],
    ),
    (
        "uncased",
        "a\u200bb\x00c  \tspaced",
        None,
        [101, 5925, 19835, 102],
        ["[CLS]", "abc", "spaced", "[SEP]"],
        [(0, 0), (0, 5), (8, 14), (0, 0)],
    ),
    (
        "uncased",
        "Paris is the [MASK] of France.",
        None,
        [101, 3000, 2003, 1996, 103, 1997, 2605, 1012, 102],
        ["[CLS]", "paris", "is", "the", "[MASK]", "of", "france", ".", "[SEP]"],
        [(0, 0), (0, 5), (6, 8), (9, 12), (13, 19), (20, 22), (23, 29), (29, 30), (0, 0)],
    ),
    (
        "uncased",
        "😀 emoji and é́",
        None,
        [101, 100, 7861, 29147, 2072, 1998, 1041, 102],
        ["[CLS]", "[UNK]", "em", "##oj", "##i", "and", "e", "[SEP]"],
        [(0, 0), (0, 1), (2, 4), (4, 6), (6, 7), (8, 11), (12, 13), (0, 0)],
    ),
    (
        "cased",
        "Ada Lovelace wrote it in 1843.",
        None,
        [101, 19222, 2185, 17510, 1724, 1122, 1107, 9869, 119, 102],
        ["[CLS]", "Ada", "Love", "##lace", "wrote", "it", "in", "1843", ".", "[SEP]"],
        [(0, 0), (0, 3), (4, 8), (8, 12), (13, 18), (19, 21), (22, 24), (25, 29), (29, 30), (0, 0)],
    ),
    (
        "cased",
        "ÉCOLE NORMALE",
        None,
        [101, 234, 15678, 17516, 24819, 2069, 8271, 17516, 102],
        ["[CLS]", "É", "##CO", "##LE", "NO", "##R", "##MA", "##LE", "[SEP]"],
        [(0, 0), (0, 1), (1, 3), (3, 5), (6, 8), (8, 9), (9, 11), (11, 13), (0, 0)],
    ),
    (
        "uncased",
        "Who wrote it?",
        "It was written by Ada Lovelace in 1843, long before computers.",
        [101, 2040, 2626, 2009, 1029, 102, 2009, 2001, 2517, 2011, 15262, 102],
        ["[CLS]", "who", "wrote", "it", "?", "[SEP]", "it", "was", "written", "by", "ada", "[SEP]"],
        [(0, 0), (0, 3), (4, 9), (10, 12), (12, 13), (0, 0), (0, 2), (3, 6), (7, 14), (15, 17), (18, 21), (0, 0)],
    ),
]


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "uncased": Tokenizer.from_pretrained(require(VOCABS / "bert-base-uncased")),
        "cased": Tokenizer.from_pretrained(require(VOCABS / "bert-base-cased")),
    }


@pytest.mark.parametrize("vocab, text, pair, ids, tokens, offsets", GOLDEN, ids=[g[1][:24] for g in GOLDEN])
def test_golden(tokenizers, vocab, text, pair, ids, tokens, offsets):
    kwargs = dict(truncation="only_second", max_length=12) if pair else {}
    enc = tokenizers[vocab](text, pair, return_offsets_mapping=True, **kwargs)
    assert enc["input_ids"][0].tolist() == ids
    assert enc.tokens(0) == tokens
    assert [tuple(o) for o in enc["offset_mapping"][0].tolist()] == offsets
