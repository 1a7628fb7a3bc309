"""Read a tokenizer from Hugging Face tokenizers' ``tokenizer.json``: each component is built by
its ``type`` (:func:`components`), and a type npformer does not implement is refused by name.

* models: ``WordPiece``, ``BPE`` (merges by rank, byte fallback...), ``Unigram`` (SentencePiece);
* normalizers: ``BertNormalizer``, ``Precompiled`` (SentencePiece's charsmap), ``NFC`` / ``NFD`` /
  ``NFKC`` / ``NFKD``, ``Lowercase``, ``StripAccents``, ``Strip``, ``Replace``, ``Prepend``, ``Sequence``;
* pre-tokenizers: ``BertPreTokenizer``, ``ByteLevel``, ``Metaspace``, ``Whitespace``,
  ``WhitespaceSplit``, ``Split``, ``Punctuation``, ``Digits``, ``Sequence``;
* post-processors: ``BertProcessing``, ``RobertaProcessing``, ``TemplateProcessing``, ``ByteLevel``,
  ``Sequence``; decoders: ``WordPiece``, ``ByteLevel``, ``Metaspace``, ``ByteFallback``, ``Fuse``,
  ``Strip``, ``Replace``, ``BPEDecoder``, ``Sequence``; the added tokens.

A plain BERT file (:func:`bert_template`) is read by :func:`read_tokenizer_json` into the
arguments of npformer's WordPiece :class:`~npformer.tokenizer.Tokenizer` (vocabulary, normalizer
flags, special tokens, ``max_input_chars_per_word``). Reference: the ``tokenizers`` library's
serialization (``serde`` of each component).
"""

from __future__ import annotations

from pathlib import Path

from npformer.files import read_json
from npformer.tokenizer.added_tokens import AddedToken
from npformer.tokenizer.bpe import BPE
from npformer.tokenizer.byte_level import ByteLevel
from npformer.tokenizer.components import decoder_from, normalizer_from, pre_tokenizer_from
from npformer.tokenizer.decoders import ByteLevelDecoder
from npformer.tokenizer.post_processor import (
    BertProcessing,
    ByteLevelProcessing,
    RobertaProcessing,
    SequenceProcessing,
    TemplateProcessing,
)
from npformer.tokenizer.unigram import Unigram
from npformer.tokenizer.wordpiece import WordPiece


def _fail(file: Path, what: str):
    raise ValueError(
        f"{file}: {what}; npformer reads WordPiece, BPE and Unigram tokenizers built from the "
        f"components Hugging Face tokenizers implements (see the supported-models table)"
    )


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
    kwargs = {
        "do_lower_case": lowercase,
        "strip_accents": None if strip is None else bool(strip),
        "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        "max_input_chars_per_word": model.get("max_input_chars_per_word", 100),
    }
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
    spec = data["model"]
    kind = spec.get("type")
    if kind == "BPE":
        model, vocab = _bpe(file, spec)
    elif kind == "Unigram":
        model, vocab = _unigram(file, spec)
    elif kind == "WordPiece":
        model, vocab = _wordpiece(file, spec)
    else:
        _fail(file, f"the model is {kind!r}; npformer implements WordPiece, BPE and Unigram")
    added = [
        AddedToken(
            t["content"],
            int(t["id"]),
            bool(t.get("special", False)),
            bool(t.get("lstrip", False)),
            bool(t.get("rstrip", False)),
            bool(t.get("single_word", False)),
            bool(t.get("normalized", True)),
        )
        for t in data.get("added_tokens") or []
    ]
    by_id = {i: t for t, i in vocab.items()}
    for t in added:
        by_id.setdefault(t.id, t.content)
    if sorted(by_id) != list(range(len(by_id))):
        _fail(file, "the vocabulary and added tokens' ids do not run from 0 without gaps")
    tokens = [by_id[i] for i in range(len(by_id))]
    pre = data.get("pre_tokenizer")
    normalizer = data.get("normalizer")
    if normalizer is not None and normalizer.get("type") == "BertNormalizer":
        if pre is None or pre.get("type") != "BertPreTokenizer":
            _fail(file, "a BertNormalizer goes with a BertPreTokenizer (it isolates CJK characters for it)")
        pre = {**pre, "handle_chinese_chars": bool(normalizer.get("handle_chinese_chars", True))}
    try:
        normalizer = normalizer_from(normalizer)
        pre = pre_tokenizer_from(pre)
        decoder = decoder_from(data.get("decoder"))
    except ValueError as e:
        _fail(file, str(e))
    special = _special_tokens(config, data, model)
    post = _post_processor(file, data.get("post_processor"), vocab | {t.content: t.id for t in added})
    names = config.get("model_input_names")
    tokenizer_class = str(config.get("tokenizer_class") or "").removesuffix("Fast").removesuffix("Tokenizer")
    if not isinstance(names, list):
        names = (
            ["input_ids", "attention_mask"]
            if tokenizer_class in NO_TOKEN_TYPES
            else ["input_ids", "token_type_ids", "attention_mask"]
        )
    return tokens, dict(
        normalizer=normalizer,
        pre_tokenizer=pre,
        model=model,
        post_processor=post,
        decoder=decoder,
        added_tokens=added,
        special=special,
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        model_input_names=tuple(names),
    )


def _bpe(file: Path, spec: dict) -> tuple[BPE, dict[str, int]]:
    if spec.get("dropout") not in (None, 0, 0.0):
        _fail(file, f"BPE dropout is {spec['dropout']!r}: dropout samples merges at random (training only)")
    for field, kind in (("vocab", dict), ("merges", list)):
        if not isinstance(spec.get(field), kind):
            _fail(file, f"the BPE model has no {field!r} {'object' if kind is dict else 'list'}")
    vocab = _ids(file, spec["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    if any(len(m) != 2 for m in merges):
        _fail(file, "a merge is not a pair of tokens")
    return BPE(
        vocab,
        merges,
        unk_token=spec.get("unk_token"),
        continuing_subword_prefix=spec.get("continuing_subword_prefix") or "",
        end_of_word_suffix=spec.get("end_of_word_suffix") or "",
        fuse_unk=bool(spec.get("fuse_unk", False)),
        byte_fallback=bool(spec.get("byte_fallback", False)),
        ignore_merges=bool(spec.get("ignore_merges", False)),
    ), vocab


def _wordpiece(file: Path, spec: dict) -> tuple[WordPiece, dict[str, int]]:
    if not isinstance(spec.get("vocab"), dict):
        _fail(file, "the WordPiece model has no 'vocab' object")
    if spec.get("continuing_subword_prefix", "##") != "##":
        _fail(file, f"continuing_subword_prefix is {spec.get('continuing_subword_prefix')!r}")
    vocab = _ids(file, spec["vocab"])
    unk = spec.get("unk_token", "[UNK]")
    if unk not in vocab:
        _fail(file, f"the WordPiece unknown token {unk!r} is not in the vocabulary")
    limit = spec.get("max_input_chars_per_word", 100)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        _fail(file, f"max_input_chars_per_word is {limit!r}, not a positive integer")
    model = WordPiece(vocab, vocab[unk], limit)
    model.unk_token = unk
    return model, vocab


def bert_template(file: Path) -> bool:
    """Whether ``tokenizer.json`` is BERT's WordPiece (BertNormalizer, BertPreTokenizer) with BERT's
    special-token layout (``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]``) and no added tokens
    outside the vocabulary, which :func:`read_tokenizer_json` reads; other WordPiece files (MPNet's
    ``<s> A </s></s> B </s>``, other normalizers, tokens added to the vocabulary) are built from
    their components."""
    data = read_json(file)
    if not isinstance(data, dict):
        return True  # read_tokenizer_json names the problem

    def kind(field: str):
        return data[field].get("type") if isinstance(data.get(field), dict) else data.get(field)

    post = data.get("post_processor")
    if kind("normalizer") != "BertNormalizer" or kind("pre_tokenizer") != "BertPreTokenizer":
        return False
    vocab = data["model"].get("vocab") if isinstance(data.get("model"), dict) else None
    added = data.get("added_tokens")
    if (
        isinstance(vocab, dict)
        and isinstance(added, list)
        and any(isinstance(t, dict) and t.get("content") not in vocab for t in added)
    ):
        return False  # tokens added after training (PyLate's "[Q] "): the components path matches them
    if not isinstance(post, dict) or post.get("type") == "BertProcessing":
        return True
    pair = post.get("pair") if post.get("type") == "TemplateProcessing" else None
    return isinstance(pair, list) and sum("SpecialToken" in item for item in pair if isinstance(item, dict)) == 3


def _unigram(file: Path, spec: dict) -> tuple[Unigram, dict[str, int]]:
    pieces = spec.get("vocab")
    if not isinstance(pieces, list) or not all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], (int, float)) for p in pieces
    ):
        _fail(file, "the Unigram model's 'vocab' is not a list of [piece, score] pairs")
    unk_id = spec.get("unk_id")
    if unk_id is not None and (not isinstance(unk_id, int) or not 0 <= unk_id < len(pieces)):
        _fail(file, f"the Unigram model's unk_id {unk_id!r} is not an index of its vocabulary")
    vocab: dict[str, int] = {}
    for i, (piece, _) in enumerate(pieces):
        vocab.setdefault(piece, i)
    return Unigram([tuple(p) for p in pieces], unk_id, bool(spec.get("byte_fallback", False))), vocab


# Transformers' tokenizer classes whose model_input_names leave token_type_ids out
NO_TOKEN_TYPES = {"Roberta", "XLMRoberta", "Camembert", "GPT2", "MPNet", "Bart", "Longformer", "DistilBert"}


def _ids(file: Path, vocab) -> dict[str, int]:
    bad = next(((t, i) for t, i in vocab.items() if not isinstance(i, int) or isinstance(i, bool) or i < 0), None)
    if bad is not None:
        _fail(file, f"the vocabulary maps {bad[0]!r} to {bad[1]!r}; ids must be integers >= 0")
    return vocab


def _special_tokens(config: dict, data: dict, model) -> dict:
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
    out["unk_token"] = out["unk_token"] or model.unk_token or ("<unk>" if "<unk>" in contents else None)
    out["mask_token"] = out["mask_token"] or ("<mask>" if "<mask>" in contents else None)
    out["pad_token"] = (
        out["pad_token"] or ((data.get("padding") or {}).get("pad_token")) or ("<pad>" if "<pad>" in contents else None)
    )
    return out


def _post_processor(file: Path, post: dict | None, ids: dict[str, int]):
    """The post-processor ``post`` describes (None: no special tokens)."""
    if post is None:
        return TemplateProcessing((("A", 0),), (("A", 0), ("B", 1)))
    kind = post.get("type")
    if kind == "RobertaProcessing":
        return RobertaProcessing(
            tuple(post["cls"]), tuple(post["sep"]), bool(post.get("trim_offsets", True)), bool(post.get("add_prefix_space", True))
        )
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
                raise ValueError(f"{merges_file}, line {number}: a merge is two tokens separated by one space, got {line[:60]!r}")
            merges.append((parts[0], parts[1]))
    names = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
    }
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
        normalizer=None,
        pre_tokenizer=ByteLevel(add_prefix_space, True, trim),
        model=BPE(vocab, merges),
        post_processor=RobertaProcessing(
            (names["cls_token"], ids[names["cls_token"]]), (names["sep_token"], ids[names["sep_token"]]), trim, add_prefix_space
        ),
        decoder=ByteLevelDecoder(),
        added_tokens=added,
        special={k: names[k] for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")},
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        model_input_names=("input_ids", "attention_mask"),
    )
