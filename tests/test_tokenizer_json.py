"""Tokenizers read from ``tokenizer.json`` alone (no vocab.txt) equal ``PreTrainedTokenizerFast``
reading the same file, for the four vocabularies of tests/data/vocab."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import VOCABS, read_sst2, read_wikitext, require
from npformer import Tokenizer

import transformers

VOCAB_NAMES = ["bert-base-uncased", "bert-base-cased", "bert-base-multilingual-cased", "bert-base-chinese"]
EXTRA = ["Héllo WÖRLD, naïve café!", "北京欢迎你 and 東京", "a\u200bb\tc\u00a0d", "unaffable tokenization", ""]


@pytest.mark.parametrize("name", VOCAB_NAMES)
def test_tokenizer_json_alone_equals_the_fast_tokenizer(tmp_path, name):
    transformers.BertTokenizerFast.from_pretrained(require(VOCABS / name)).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    ours = Tokenizer.from_pretrained(tmp_path)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), pad_token="[PAD]")
    texts = read_sst2("dev")[0][:300] + read_wikitext()[:100] + EXTRA
    for text in texts:
        enc = ours.encode(text, add_special_tokens=True)
        expected = ref(text, return_offsets_mapping=True)
        assert enc.ids == expected["input_ids"], text
        assert [tuple(o) for o in enc.offsets] == [tuple(o) for o in expected["offset_mapping"]], text
    a = ours(["a pair", "two"], ["of texts", "more"], padding=True)
    b = ref(["a pair", "two"], ["of texts", "more"], padding=True, return_tensors="np")
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["token_type_ids"], b["token_type_ids"])


def test_tokens_added_to_a_bert_vocabulary_are_matched(tmp_path):
    """Tokens added after training (PyLate's ``[Q] `` / ``[D] `` markers, a fine-tune's new words,
    a special token) are matched in the text as the fast tokenizer matches them."""
    ref = transformers.BertTokenizerFast.from_pretrained(require(VOCABS / "bert-base-uncased"))
    ref.add_tokens(["[Q] ", "[D] ", "covid19"])
    ref.add_special_tokens({"additional_special_tokens": ["<ent>"]})
    ref.save_pretrained(tmp_path)
    ours = Tokenizer.from_pretrained(tmp_path)
    assert len(ours) == len(ref) and ours.convert_tokens_to_ids("[Q] ") == ref.convert_tokens_to_ids("[Q] ")
    texts = ["[Q] what is covid19?", "a [D] b [D]c [Q]", "COVID19 and <ent>Paris<ent> [q] ", "<ent>"]
    for text in texts + read_sst2("dev")[0][:50]:
        expected = ref(text, return_offsets_mapping=True)
        enc = ours.encode(text, add_special_tokens=True)
        assert enc.ids == expected["input_ids"], text
        assert [tuple(o) for o in enc.offsets] == [tuple(o) for o in expected["offset_mapping"]], text
    assert ours.decode(ours.encode(texts[0], add_special_tokens=True).ids) == ref.decode(ref(texts[0])["input_ids"])


def test_unsupported_tokenizer_json_is_named(tmp_path):
    transformers.BertTokenizerFast.from_pretrained(require(VOCABS / "bert-base-uncased")).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["model"]["type"] = "WordLevel"
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="the model is 'WordLevel'; npformer implements WordPiece, BPE and Unigram"):
        Tokenizer.from_pretrained(tmp_path)
    data["model"]["type"] = "BPE"  # a WordPiece vocabulary called BPE: no merges
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="the BPE model has no 'merges' list"):
        Tokenizer.from_pretrained(tmp_path)
    data["model"]["type"] = "WordPiece"
    data["normalizer"] = {"type": "Nmt"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="the normalizer is 'Nmt'"):
        Tokenizer.from_pretrained(tmp_path)
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json, vocab.json"):
        Tokenizer.from_pretrained(tmp_path)
