"""Read a tokenizer from Hugging Face tokenizers' ``tokenizer.json``: each component is built by
its ``type`` (:func:`components`), and a type npformer does not implement is refused by name.

A BERT WordPiece file (:func:`read_tokenizer_json`) gives what npformer's WordPiece
:class:`~npformer.tokenizer.Tokenizer` takes:

* the vocabulary: ``model.vocab``, whose ids must run from 0 with no gaps;
* the normalizer flags: ``BertNormalizer``'s ``lowercase``, ``strip_accents`` and
  ``handle_chinese_chars``;
* the special tokens: ``[UNK]`` from the model, ``[CLS]`` / ``[SEP]`` from the post-processor,
  ``[PAD]`` from the padding settings, ``[MASK]`` from the added tokens;
* ``max_input_chars_per_word`` (the maximum length stays ``tokenizer_config.json``'s).

A WordPiece file with another normalizer or pre-tokenizer, or a continuing-subword prefix other
than ``##``, is refused naming what it holds. A BPE file (GPT-2, RoBERTa) gives its components:
the ``BPE`` model, the ``ByteLevel`` pre-tokenizer and decoder, the ``RobertaProcessing`` /
``TemplateProcessing`` / ``BertProcessing`` / ``ByteLevel`` post-processors and the added tokens.
Reference: the ``tokenizers`` library's serialization (``serde`` of each component).
"""

from __future__ import annotations

from pathlib import Path

from npformer.files import read_json
from npformer.tokenizer.added_tokens import AddedToken
from npformer.tokenizer.bpe import BPE
from npformer.tokenizer.byte_level import ByteLevel
from npformer.tokenizer.decoders import ByteLevelDecoder
from npformer.tokenizer.post_processor import (BertProcessing, ByteLevelProcessing, RobertaProcessing,
                                               SequenceProcessing, TemplateProcessing)


def _fail(file: Path, what: str):
    raise ValueError(f"{file}: {what}; npformer reads WordPiece tokenizers with a BERT normalizer and "
                     f"pre-tokenizer (as BertTokenizerFast saves them) and byte-level BPE tokenizers")


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


def model_type(file: Path) -> str:
    """The ``model.type`` of ``tokenizer.json`` (``"WordPiece"`` when the file does not say)."""
    data = read_json(file)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        _fail(file, "no 'model' object")
    return str(model.get("type", "WordPiece"))


def components(file: Path, config: dict) -> tuple[list[str], dict]:
    """``(tokens in id order, Tokenizer.from_components keyword arguments)`` of a BPE
    ``tokenizer.json``; ``config`` is ``tokenizer_config.json``'s object (special tokens, lengths).
    Raises ``ValueError`` naming the file and the component type npformer does not implement, or a
    field of the wrong JSON type."""
    data = read_json(file)
    try:
        return _components(file, data, config)
    except (TypeError, KeyError, AttributeError, IndexError) as e:
        _fail(file, f"a field has an unexpected type or shape ({type(e).__name__}: {e})")


def _components(file: Path, data: dict, config: dict) -> tuple[list[str], dict]:
    model = data["model"]
    if model.get("type") != "BPE":
        _fail(file, f"the model is {model.get('type')!r}; npformer implements WordPiece and BPE")
    if model.get("dropout") not in (None, 0, 0.0):
        _fail(file, f"BPE dropout is {model['dropout']!r}: dropout samples merges at random (training only)")
    for field, kind in (("vocab", dict), ("merges", list)):
        if not isinstance(model.get(field), kind):
            _fail(file, f"the BPE model has no {field!r} {'object' if kind is dict else 'list'}")
    vocab = _ids(file, model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if any(len(m) != 2 for m in merges):
        _fail(file, "a merge is not a pair of tokens")
    added = [AddedToken(t["content"], int(t["id"]), bool(t.get("special", False)), bool(t.get("lstrip", False)),
                     bool(t.get("rstrip", False)), bool(t.get("single_word", False)), bool(t.get("normalized", True)))
             for t in data.get("added_tokens") or []]
    by_id = {i: t for t, i in vocab.items()}
    for t in added:
        by_id.setdefault(t.id, t.content)
    if sorted(by_id) != list(range(len(by_id))):
        _fail(file, "the vocabulary and added tokens' ids do not run from 0 without gaps")
    tokens = [by_id[i] for i in range(len(by_id))]
    bpe = BPE(vocab, merges, unk_token=model.get("unk_token"), continuing_subword_prefix=model.get(
        "continuing_subword_prefix") or "", end_of_word_suffix=model.get("end_of_word_suffix") or "",
        fuse_unk=bool(model.get("fuse_unk", False)), byte_fallback=bool(model.get("byte_fallback", False)),
        ignore_merges=bool(model.get("ignore_merges", False)))
    if data.get("normalizer") is not None:
        _fail(file, f"the normalizer is {data['normalizer'].get('type')!r}; npformer's BPE tokenizers take none yet")
    pre = data.get("pre_tokenizer")
    if pre is None or pre.get("type") != "ByteLevel":
        _fail(file, f"the pre-tokenizer is {None if pre is None else pre.get('type')!r}; BPE takes ByteLevel")
    decoder = data.get("decoder")
    if decoder is None or decoder.get("type") != "ByteLevel":
        _fail(file, f"the decoder is {None if decoder is None else decoder.get('type')!r}; BPE takes ByteLevel")
    special = _special_tokens(config, data, bpe)
    post = _post_processor(file, data.get("post_processor"), vocab | {t.content: t.id for t in added})
    names = config.get("model_input_names")
    tokenizer_class = str(config.get("tokenizer_class") or "").removesuffix("Fast").removesuffix("Tokenizer")
    if not isinstance(names, list):
        names = ["input_ids", "attention_mask"] if tokenizer_class in NO_TOKEN_TYPES else \
            ["input_ids", "token_type_ids", "attention_mask"]
    return tokens, dict(
        normalizer=None, model=bpe, post_processor=post, decoder=ByteLevelDecoder(), added_tokens=added,
        pre_tokenizer=ByteLevel(bool(pre.get("add_prefix_space", False)), bool(pre.get("use_regex", True)),
                                bool(pre.get("trim_offsets", True))),
        special=special, clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        model_input_names=tuple(names))


# Transformers' tokenizer classes whose model_input_names leave token_type_ids out
NO_TOKEN_TYPES = {"Roberta", "XLMRoberta", "Camembert", "GPT2", "MPNet", "Bart", "Longformer", "DistilBert"}


def _ids(file: Path, vocab) -> dict[str, int]:
    bad = next(((t, i) for t, i in vocab.items() if not isinstance(i, int) or isinstance(i, bool) or i < 0), None)
    if bad is not None:
        _fail(file, f"the vocabulary maps {bad[0]!r} to {bad[1]!r}; ids must be integers >= 0")
    return vocab


def _special_tokens(config: dict, data: dict, bpe) -> dict:
    """The special tokens' names: ``tokenizer_config.json``'s (a serialized AddedToken's content),
    else the ones the file implies (its unknown token, the post-processor's, ``<mask>``, padding)."""
    out = {}
    for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        out[key] = value if isinstance(value, str) else None
    post = data.get("post_processor") or {}
    if post.get("type") in ("RobertaProcessing", "BertProcessing"):
        out["cls_token"] = out["cls_token"] or post["cls"][0]
        out["sep_token"] = out["sep_token"] or post["sep"][0]
    contents = {t.get("content") for t in data.get("added_tokens") or []}
    out["unk_token"] = out["unk_token"] or bpe.unk_token or ("<unk>" if "<unk>" in contents else None)
    out["mask_token"] = out["mask_token"] or ("<mask>" if "<mask>" in contents else None)
    out["pad_token"] = out["pad_token"] or ((data.get("padding") or {}).get("pad_token")) or \
        ("<pad>" if "<pad>" in contents else None)
    return out


def _post_processor(file: Path, post: dict | None, ids: dict[str, int]):
    """The post-processor ``post`` describes (None: no special tokens)."""
    if post is None:
        return TemplateProcessing((("A", 0),), (("A", 0), ("B", 1)))
    kind = post.get("type")
    if kind == "RobertaProcessing":
        return RobertaProcessing(tuple(post["cls"]), tuple(post["sep"]), bool(post.get("trim_offsets", True)),
                                 bool(post.get("add_prefix_space", True)))
    if kind == "BertProcessing":
        return BertProcessing(tuple(post["cls"]), tuple(post["sep"]))
    if kind == "ByteLevel":
        return ByteLevelProcessing(bool(post.get("trim_offsets", True)), bool(post.get("add_prefix_space", True)))
    if kind == "TemplateProcessing":
        return TemplateProcessing(_template(file, post["single"], post), _template(file, post["pair"], post))
    if kind == "Sequence":
        return SequenceProcessing(tuple(_post_processor(file, p, ids) for p in post["processors"]))
    _fail(file, f"the post-processor is {kind!r}")


def _template(file: Path, items: list, post: dict) -> tuple:
    out = []
    for item in items:
        if "Sequence" in item:
            out.append(("A" if item["Sequence"]["id"] == "A" else "B", int(item["Sequence"]["type_id"])))
        else:
            name = item["SpecialToken"]["id"]
            special = post["special_tokens"][name]
            if len(special["ids"]) != 1:
                _fail(file, f"the template's special token {name!r} has {len(special['ids'])} ids")
            out.append(((special["tokens"][0], int(special["ids"][0])), int(item["SpecialToken"]["type_id"])))
    return tuple(out)


def gpt2_files(directory: Path, config: dict) -> tuple[list[str], dict]:
    """``(tokens, components)`` of a ``vocab.json`` + ``merges.txt`` byte-level BPE (GPT-2 /
    RoBERTa layout) as Transformers' ``RobertaTokenizerFast`` builds it: its special tokens
    (``tokenizer_config.json``'s, else ``<s> </s> <unk> <pad> <mask>``) are added tokens, those
    missing from the vocabulary appended after it in Transformers' order (bos, eos, unk, sep, pad,
    cls, mask); ``<mask>`` takes the space before it (``lstrip``). Raises ``ValueError`` naming the
    file for a malformed vocabulary or merge line."""
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab = _ids(vocab_file, read_json(vocab_file))
    merges = []
    with open(merges_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if number == 1 and line.startswith("#version") or not line:
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{merges_file}, line {number}: a merge is two tokens separated by one space, "
                                 f"got {line[:60]!r}")
            merges.append((parts[0], parts[1]))
    names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "pad_token": "<pad>",
             "cls_token": "<s>", "mask_token": "<mask>"}
    for key in names:
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            names[key] = value
    added, next_id = [], max(vocab.values(), default=-1) + 1
    for token in dict.fromkeys(names.values()):
        token_id = vocab.get(token)
        if token_id is None:
            token_id, next_id = next_id, next_id + 1
        added.append(AddedToken(token, token_id, lstrip=token == names["mask_token"]))
    by_id = {i: t for t, i in vocab.items()} | {t.id: t.content for t in added}
    if sorted(by_id) != list(range(len(by_id))):
        _fail(vocab_file, "the vocabulary's ids do not run from 0 without gaps")
    add_prefix_space, trim = bool(config.get("add_prefix_space", False)), bool(config.get("trim_offsets", True))
    ids = {t.content: t.id for t in added}
    return [by_id[i] for i in range(len(by_id))], dict(
        normalizer=None, pre_tokenizer=ByteLevel(add_prefix_space, True, trim), model=BPE(vocab, merges),
        post_processor=RobertaProcessing((names["cls_token"], ids[names["cls_token"]]),
                                         (names["sep_token"], ids[names["sep_token"]]), trim, add_prefix_space),
        decoder=ByteLevelDecoder(), added_tokens=added,
        special={k: names[k] for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")},
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        model_input_names=("input_ids", "attention_mask"))
