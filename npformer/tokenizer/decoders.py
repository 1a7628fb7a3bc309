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

    def chain(self, tokens: list[str]) -> list[str]:
        return [tokens_to_string(tokens)]


@dataclass(frozen=True)
class ByteLevelDecoder:
    """``tokens`` -> text: their byte characters as UTF-8 (tokenizers' ``ByteLevel`` decoder)."""

    def __call__(self, tokens: list[str]) -> str:
        return decode_bytes(tokens)

    def chain(self, tokens: list[str]) -> list[str]:
        return [decode_bytes(tokens)]


def clean_up(text: str) -> str:
    """Transformers' ``clean_up_tokenization`` (no space before ``. ? ! ,`` and English contractions)."""
    return cleanup(text)


# ---- the other decoders of tokenizer.json (tokenizers ``decoders/``): each has ``chain(tokens)``,
# tokens -> tokens, so that a Sequence can run them one after the other; calling one joins its chain.


class _Chained:
    def __call__(self, tokens: list[str]) -> str:
        return "".join(self.chain(list(tokens)))


@dataclass(frozen=True)
class MetaspaceDecoder(_Chained):
    """``▁`` back to spaces; the first token loses its ``▁`` unless ``prepend_scheme`` is "never"."""

    replacement: str = "\u2581"
    prepend_scheme: str = "always"

    def chain(self, tokens: list[str]) -> list[str]:
        out = []
        for i, token in enumerate(tokens):
            space = "" if i == 0 and self.prepend_scheme != "never" else " "
            out.append(token.replace(self.replacement, space))
        return out


@dataclass(frozen=True)
class ReplaceDecoder(_Chained):
    """Each token's occurrences of ``pattern`` become ``content``."""

    pattern: str
    content: str

    def chain(self, tokens: list[str]) -> list[str]:
        return [t.replace(self.pattern, self.content) for t in tokens]


@dataclass(frozen=True)
class ByteFallbackDecoder(_Chained):
    """Runs of ``<0xXX>`` tokens become the UTF-8 text of their bytes (U+FFFD per byte when invalid)."""

    def chain(self, tokens: list[str]) -> list[str]:
        out, run = [], bytearray()

        def flush():
            if run:
                try:
                    out.append(run.decode("utf-8"))
                except UnicodeDecodeError:
                    out.extend("\ufffd" for _ in run)
                run.clear()

        for token in tokens:
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                try:
                    run.append(int(token[3:5], 16))
                    continue
                except ValueError:
                    pass
            flush()
            out.append(token)
        flush()
        return out


@dataclass(frozen=True)
class FuseDecoder(_Chained):
    """All tokens as one."""

    def chain(self, tokens: list[str]) -> list[str]:
        return ["".join(tokens)]


@dataclass(frozen=True)
class StripDecoder(_Chained):
    """Up to ``start`` leading and ``stop`` trailing ``content`` chars off each token."""

    content: str
    start: int = 0
    stop: int = 0

    def chain(self, tokens: list[str]) -> list[str]:
        out = []
        for token in tokens:
            a, b = 0, len(token)
            while a < min(self.start, b) and token[a] == self.content:
                a += 1
            while b > a and len(token) - b < self.stop and token[b - 1] == self.content:
                b -= 1
            out.append(token[a:b])
        return out


@dataclass(frozen=True)
class BPEDecoder(_Chained):
    """``suffix`` (``</w>``) becomes a space, or nothing on the last token."""

    suffix: str = "</w>"

    def chain(self, tokens: list[str]) -> list[str]:
        return [t.replace(self.suffix, "" if i == len(tokens) - 1 else " ") for i, t in enumerate(tokens)]


@dataclass(frozen=True)
class SequenceDecoder(_Chained):
    """Several decoders' chains one after the other."""

    steps: tuple

    def chain(self, tokens: list[str]) -> list[str]:
        for step in self.steps:
            tokens = step.chain(tokens) if hasattr(step, "chain") else [step(tokens)]
        return tokens


@dataclass(frozen=True)
class SpaceDecoder(_Chained):
    """Tokens joined by spaces (a tokenizer without a decoder)."""

    def chain(self, tokens: list[str]) -> list[str]:
        return [" ".join(tokens)]
