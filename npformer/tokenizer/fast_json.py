"""Read a WordPiece tokenizer from Hugging Face tokenizers' ``tokenizer.json``.

What npformer's :class:`~npformer.tokenizer.Tokenizer` needs, taken from the file the fast
tokenizer reads:

* the vocabulary: ``model.vocab``, whose ids must run from 0 with no gaps;
* the normalizer flags: ``BertNormalizer``'s ``lowercase``, ``strip_accents`` and
  ``handle_chinese_chars``;
* the special tokens: ``[UNK]`` from the model, ``[CLS]`` / ``[SEP]`` from the post-processor,
  ``[PAD]`` from the padding settings, ``[MASK]`` from the added tokens;
* ``max_input_chars_per_word`` (the maximum length stays ``tokenizer_config.json``'s).

Anything else is refused with an error naming what the file holds: another model (BPE,
Unigram...), another normalizer or pre-tokenizer, or a continuing-subword prefix other than
``##``. Reference: the ``tokenizers`` library's serialization of ``BertTokenizerFast``.
"""

from __future__ import annotations

from pathlib import Path

from npformer.files import read_json


def _fail(file: Path, what: str):
    raise ValueError(f"{file}: {what}; npformer reads WordPiece tokenizers with a BERT normalizer and "
                     f"pre-tokenizer (as BertTokenizerFast saves them)")


def read_tokenizer_json(file: Path) -> tuple[list[str], dict]:
    """``(tokens in id order, Tokenizer keyword arguments)`` from ``tokenizer.json``. Raises
    ``ValueError`` naming the file and what it holds when it is not a BERT WordPiece tokenizer, or
    when a field has the wrong JSON type."""
    data = read_json(file)
    try:
        return _read(file, data)
    except (TypeError, KeyError, AttributeError, IndexError) as e:  # a field of the wrong JSON type
        _fail(file, f"a field has an unexpected type or shape ({type(e).__name__}: {e})")


def _read(file: Path, data) -> tuple[list[str], dict]:
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        _fail(file, "no 'model' object")
    model = data["model"]
    if model.get("type", "WordPiece") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        _fail(file, f"the model is {model.get('type')!r}, not WordPiece")
    if model.get("continuing_subword_prefix", "##") != "##":
        _fail(file, f"continuing_subword_prefix is {model.get('continuing_subword_prefix')!r}")
    normalizer = data.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        _fail(file, f"the normalizer is {normalizer.get('type')!r}")
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "BertPreTokenizer":
        _fail(file, f"the pre-tokenizer is {pre.get('type')!r}")
    vocab: dict = model["vocab"]
    bad = next(((t, i) for t, i in vocab.items() if not isinstance(i, int) or isinstance(i, bool)), None)
    if bad is not None:
        _fail(file, f"the vocabulary maps {bad[0]!r} to {bad[1]!r}; ids must be integers")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        _fail(file, "the vocabulary ids do not run from 0 without gaps")
    tokens = [""] * len(ids)
    for token, i in vocab.items():
        tokens[i] = token
    lowercase = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    kwargs = {"do_lower_case": lowercase, "strip_accents": None if strip is None else bool(strip),
              "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
              "max_input_chars_per_word": model.get("max_input_chars_per_word", 100)}
    if not isinstance(kwargs["max_input_chars_per_word"], int) or kwargs["max_input_chars_per_word"] < 1:
        _fail(file, f"max_input_chars_per_word is {kwargs['max_input_chars_per_word']!r}, not a positive integer")
    if isinstance(model.get("unk_token"), str):
        kwargs["unk_token"] = model["unk_token"]
    post = data.get("post_processor") or {}
    if post.get("type") == "BertProcessing":
        kwargs["cls_token"], kwargs["sep_token"] = post["cls"][0], post["sep"][0]
    elif post.get("type") == "TemplateProcessing":
        names = [item["SpecialToken"]["id"] for item in post.get("single", []) if "SpecialToken" in item]
        if len(names) == 2:
            kwargs["cls_token"], kwargs["sep_token"] = names
    padding = data.get("padding") or {}
    if isinstance(padding.get("pad_token"), str):
        kwargs["pad_token"] = padding["pad_token"]
    added = {t.get("content") for t in data.get("added_tokens") or [] if isinstance(t, dict)}
    if "[MASK]" not in added and "<mask>" in added:
        kwargs["mask_token"] = "<mask>"
    # the maximum length stays tokenizer_config.json's model_max_length: the fast tokenizer's own
    # truncation setting (sentence-transformers save 128 or 256 there) is replaced by each call's
    return tokens, kwargs
