"""Tokenizer components from their ``tokenizer.json`` objects (Hugging Face tokenizers' serde):
``normalizer_from``, ``pre_tokenizer_from``, ``decoder_from``, each built by its ``type``; a type
npformer does not implement is refused by name (``ValueError``; :mod:`.fast_json` adds the file).
"""

from __future__ import annotations

import re

from npformer.tokenizer import decoders, normalizer, pre_tokenizer
from npformer.tokenizer.byte_level import ByteLevel
from npformer.tokenizer.decoders import ByteLevelDecoder
from npformer.tokenizer.normalizer import BertNormalizer
from npformer.tokenizer.precompiled import Precompiled


def _refuse(what: str):
    raise ValueError(what)


def _pattern(spec: dict, where: str) -> re.Pattern:
    """A ``{"String": s}`` or ``{"Regex": r}`` pattern (a Rust regex; the common syntax is Python's)."""
    if "String" in spec:
        return re.compile(re.escape(spec["String"]))
    try:
        return re.compile(spec["Regex"])
    except re.error as e:
        _refuse(f"the {where} regex {spec['Regex']!r} is not one npformer can read ({e})")


def normalizer_from(spec: dict | None):
    """The normalizer ``spec`` describes (None: the text as given)."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "BertNormalizer":
        strip = spec.get("strip_accents")
        lower = bool(spec.get("lowercase", True))
        return BertNormalizer(lower, lower if strip is None else bool(strip))
    if kind == "Sequence":
        return normalizer.sequence([normalizer_from(s) for s in spec["normalizers"]])
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return normalizer.unicode_form(kind)
    if kind == "Lowercase":
        return normalizer.lowercase
    if kind == "StripAccents":
        return normalizer.strip_accents
    if kind == "Strip":
        return normalizer.strip(bool(spec.get("strip_left", True)), bool(spec.get("strip_right", True)))
    if kind == "Replace":
        return normalizer.replace(_pattern(spec["pattern"], "Replace normalizer's"), str(spec["content"]))
    if kind == "Prepend":
        return normalizer.prepend(str(spec["prepend"]))
    if kind == "Precompiled":
        try:
            return Precompiled(spec["precompiled_charsmap"])
        except ValueError as e:
            _refuse(str(e))
    _refuse(f"the normalizer is {kind!r}")


def _behavior(value) -> str:
    """tokenizers' ``SplitDelimiterBehavior`` name (``MergedWithNext``) in snake case."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", str(value)).lower()


def _prepend_scheme(spec: dict) -> str:
    scheme = spec.get("prepend_scheme")
    if scheme is None:  # files before tokenizers 0.15: add_prefix_space
        return "always" if spec.get("add_prefix_space", True) else "never"
    return str(scheme)


def pre_tokenizer_from(spec: dict | None):
    """The pre-tokenizer ``spec`` describes (None: the text is one word)."""
    if spec is None:
        return None
    kind = spec.get("type")
    try:
        if kind == "ByteLevel":
            return ByteLevel(
                bool(spec.get("add_prefix_space", False)), bool(spec.get("use_regex", True)), bool(spec.get("trim_offsets", True))
            )
        if kind == "Metaspace":
            return pre_tokenizer.Metaspace(
                str(spec.get("replacement", "\u2581")), _prepend_scheme(spec), bool(spec.get("split", True))
            )
        if kind == "BertPreTokenizer":
            return pre_tokenizer.BertPreTokenizer(bool(spec.get("handle_chinese_chars", True)))
        if kind == "Whitespace":
            return pre_tokenizer.whitespace()
        if kind == "WhitespaceSplit":
            return pre_tokenizer.whitespace_split()
        if kind == "Punctuation":
            return pre_tokenizer.punctuation(_behavior(spec.get("behavior", "Isolated")))
        if kind == "Digits":
            return pre_tokenizer.digits(bool(spec.get("individual_digits", False)))
        if kind == "Split":
            return pre_tokenizer.Split(
                _pattern(spec["pattern"], "Split pre-tokenizer's"), _behavior(spec["behavior"]), bool(spec.get("invert", False))
            )
        if kind == "Sequence":
            return pre_tokenizer.SequencePreTokenizer([pre_tokenizer_from(s) for s in spec["pretokenizers"]])
    except ValueError as e:
        _refuse(f"the {kind} pre-tokenizer: {e}")
    _refuse(f"the pre-tokenizer is {kind!r}")


def decoder_from(spec: dict | None):
    """The decoder ``spec`` describes (None: tokens joined by spaces, as tokenizers without one)."""
    if spec is None:
        return decoders.SpaceDecoder()
    kind = spec.get("type")
    if kind == "ByteLevel":
        return ByteLevelDecoder()
    if kind == "WordPiece":
        return decoders.WordPieceDecoder()
    if kind == "Metaspace":
        return decoders.MetaspaceDecoder(str(spec.get("replacement", "\u2581")), _prepend_scheme(spec))
    if kind == "Replace":
        pattern = spec["pattern"]
        if "String" not in pattern:
            _refuse("the Replace decoder's pattern is a regex; npformer reads string patterns there")
        return decoders.ReplaceDecoder(pattern["String"], str(spec["content"]))
    if kind == "ByteFallback":
        return decoders.ByteFallbackDecoder()
    if kind == "Fuse":
        return decoders.FuseDecoder()
    if kind == "Strip":
        return decoders.StripDecoder(str(spec["content"]), int(spec.get("start", 0)), int(spec.get("stop", 0)))
    if kind == "BPEDecoder":
        return decoders.BPEDecoder(str(spec.get("suffix", "</w>")))
    if kind == "Sequence":
        return decoders.SequenceDecoder(tuple(decoder_from(s) for s in spec["decoders"]))
    _refuse(f"the decoder is {kind!r}")
