"""Post-processors: where special tokens go around one text or a pair, how many they are, and
(byte-level tokenizers) offsets without the spaces tokens carry.

As Hugging Face tokenizers' ``processors``: ``BertProcessing`` (``[CLS] A [SEP]``,
``[CLS] A [SEP] B [SEP]``, type ids 0 then 1), ``RobertaProcessing`` (``<s> A </s>``,
``<s> A </s></s> B </s>``, type ids 0, offsets trimmed), ``TemplateProcessing`` (any template of
special tokens and ``$A`` / ``$B`` with their type ids) and ``ByteLevel`` (offsets trimmed, no
special tokens). Truncation asks :meth:`added_tokens` how much room the special tokens take.
Reference: tokenizers ``processors/bert.rs``, ``roberta.rs``, ``template.rs``, ``byte_level.rs``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, replace
from functools import partial

from npformer.tokenizer.byte_level import trim_offsets
from npformer.tokenizer.encoding import Encoding, Offsets

# A template item: ("A" | "B", type_id) for a sequence, or ((token, id), type_id) for a special token
Item = tuple


def _apply(template: list[Item], a: Encoding, b: Encoding | None, trim: bool | None = None) -> Encoding:
    """The encoding ``template`` spells with sequences ``a`` and ``b``; with ``trim`` not None, their
    offsets trimmed (:func:`~npformer.tokenizer.byte_level.trim_offsets` with ``add_prefix_space=trim``)
    when first read."""
    ids, tokens, word_ids, seq_ids, type_ids, special = [], [], [], [], [], []
    starts, ends, edits = array("i"), array("i"), []
    for piece, type_id in template:
        if piece in ("A", "B"):
            enc = a if piece == "A" else b
            if trim is not None:
                edits.append(_trim(enc.tokens, trim, len(ids)))
            offsets = Offsets.of(enc.offsets)
            starts += offsets.starts
            ends += offsets.ends
            ids += enc.ids
            tokens += enc.tokens
            word_ids += enc.word_ids
            seq_ids += [0 if piece == "A" else 1] * len(enc)
            type_ids += [type_id] * len(enc)
            special += [0] * len(enc)
        else:
            token, token_id = piece
            ids.append(token_id)
            tokens.append(token)
            starts.append(0)
            ends.append(0)
            word_ids.append(None)
            seq_ids.append(None)
            type_ids.append(type_id)
            special.append(1)
    offsets = Offsets(starts, ends, tuple(edits))
    return Encoding(ids, tokens, offsets, word_ids, seq_ids, type_ids, special, [1] * len(ids))


@dataclass(frozen=True)
class TemplateProcessing:
    """``single`` and ``pair`` templates (lists of :data:`Item`)."""

    single: tuple
    pair: tuple

    def added_tokens(self, is_pair: bool) -> int:
        """How many special tokens :meth:`process` adds (tokenizers' ``added_tokens``)."""
        return sum(piece not in ("A", "B") for piece, _ in (self.pair if is_pair else self.single))

    def process(self, a: Encoding, b: Encoding | None) -> Encoding:
        """The template filled with ``a`` (and ``b``): ids, tokens, offsets ``(0, 0)`` and word /
        sequence ids None for the special tokens, the template's type ids, the special-tokens mask."""
        return _apply(list(self.pair if b is not None else self.single), a, b)


def BertProcessing(cls: tuple[str, int], sep: tuple[str, int]) -> TemplateProcessing:  # noqa: N802 - tokenizers' name
    """``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]``; ``cls`` and ``sep`` are ``(token, id)``."""
    return TemplateProcessing(((cls, 0), ("A", 0), (sep, 0)), ((cls, 0), ("A", 0), (sep, 0), ("B", 1), (sep, 1)))


@dataclass(frozen=True)
class RobertaProcessing:
    """``<s> A </s>`` / ``<s> A </s></s> B </s>``, every type id 0; with ``trim_offsets`` the
    tokens' offsets leave out the spaces they carry (see :func:`~npformer.tokenizer.byte_level.trim_offsets`)."""

    cls: tuple[str, int]
    sep: tuple[str, int]
    trim_offsets: bool = True
    add_prefix_space: bool = True

    def added_tokens(self, is_pair: bool) -> int:
        return 4 if is_pair else 2

    def process(self, a: Encoding, b: Encoding | None) -> Encoding:
        cls, sep, trim = self.cls, self.sep, self.add_prefix_space if self.trim_offsets else None
        if b is None:
            return _apply([(cls, 0), ("A", 0), (sep, 0)], a, None, trim)
        return _apply([(cls, 0), ("A", 0), (sep, 0), (sep, 0), ("B", 0), (sep, 0)], a, b, trim)


@dataclass(frozen=True)
class ByteLevelProcessing:
    """The ``ByteLevel`` post-processor: no special tokens; offsets trimmed when ``trim_offsets``."""

    trim_offsets: bool = True
    add_prefix_space: bool = True

    def added_tokens(self, is_pair: bool) -> int:
        return 0

    def process(self, a: Encoding, b: Encoding | None) -> Encoding:
        trim = self.add_prefix_space if self.trim_offsets else None
        return _apply([("A", 0)] + ([("B", 1)] if b is not None else []), a, b, trim)


@dataclass(frozen=True)
class SequenceProcessing:
    """``Sequence``: each post-processor in turn (a byte-level trim, then a template...)."""

    processors: tuple

    def added_tokens(self, is_pair: bool) -> int:
        return sum(p.added_tokens(is_pair) for p in self.processors)

    def process(self, a: Encoding, b: Encoding | None) -> Encoding:
        for p in self.processors[:-1]:
            if isinstance(p, ByteLevelProcessing) and p.trim_offsets:
                a, b = _trimmed(a, p.add_prefix_space), None if b is None else _trimmed(b, p.add_prefix_space)
            elif not isinstance(p, ByteLevelProcessing):
                raise ValueError(f"a Sequence post-processor takes a template only last, got {type(p).__name__}")
        return self.processors[-1].process(a, b)


def _trimmed(enc: Encoding, add_prefix_space: bool) -> Encoding:
    """``enc`` with its offsets trimmed as :func:`~npformer.tokenizer.byte_level.trim_offsets` does
    (when first read, as :func:`_apply` trims them)."""
    offsets = Offsets.of(enc.offsets)
    return replace(enc, offsets=Offsets(offsets.starts, offsets.ends, (_trim(enc.tokens, add_prefix_space, 0),)))


def _trim(tokens: list[str], add_prefix_space: bool, at: int):
    """The pending edit of an :class:`Offsets` that trims ``tokens``' offsets, from position ``at``."""
    return partial(trim_offsets, tokens, add_prefix_space, at)
