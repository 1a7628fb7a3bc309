"""Decoders: token strings back to text, as Hugging Face tokenizers' ``decoders`` (``WordPiece``:
``##`` pieces glued on, others spaced; ``ByteLevel``: byte characters back to UTF-8), followed by
Transformers' ``clean_up_tokenization`` when the tokenizer's ``clean_up_tokenization_spaces`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from npformer.tokenizer.byte_level import decode_bytes
from npformer.tokenizer.wordpiece import cleanup, tokens_to_string


@dataclass(frozen=True)
class WordPieceDecoder:
    """``tokens`` -> text: ``##`` continuations glued to the token before, with the decoder's own
    per-token cleanup (tokenizers' ``decoders/wordpiece.rs``, ``cleanup=True``)."""

    def __call__(self, tokens: list[str]) -> str:
        return tokens_to_string(tokens)


@dataclass(frozen=True)
class ByteLevelDecoder:
    """``tokens`` -> text: their byte characters as UTF-8 (tokenizers' ``ByteLevel`` decoder)."""

    def __call__(self, tokens: list[str]) -> str:
        return decode_bytes(tokens)


def clean_up(text: str) -> str:
    """Transformers' ``clean_up_tokenization`` (no space before ``. ? ! ,`` and English contractions)."""
    return cleanup(text)
