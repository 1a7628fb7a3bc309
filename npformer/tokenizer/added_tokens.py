"""Added tokens: special tokens (``[CLS]``, ``<mask>``...) and others a tokenizer adds to its model's
vocabulary, found in the text before the model sees it, as Hugging Face tokenizers'
``tokenizer/added_vocabulary.rs`` finds them: leftmost-longest matches, left to right;
``lstrip`` / ``rstrip`` take the whitespace before / after a match with it; a ``single_word``
token matches only between non-word characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from npformer.tokenizer.normalizer import WHITESPACE


@dataclass(frozen=True)
class AddedToken:
    """One added token, with ``tokenizer.json``'s ``added_tokens`` fields."""

    content: str
    id: int
    special: bool = True
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class AddedTokens:
    """``added(text)`` -> ``(start, end, token or None)`` runs of ``text`` in order: ordinary text
    (None) and the added tokens found in it (``end - start`` may exceed the token's length by the
    whitespace ``lstrip`` / ``rstrip`` took)."""

    def __init__(self, tokens: list[AddedToken]):
        self.tokens = tokens
        self.by_content = {t.content: t for t in tokens}
        longest_first = sorted(self.by_content, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None

    def __call__(self, text: str):
        cursor = 0
        if self._pattern is not None:
            for m in self._pattern.finditer(text):
                token = self.by_content[m.group()]
                start, end = m.start(), m.end()
                if start < cursor:  # inside the whitespace an rstrip before it took
                    continue
                if token.single_word and (start > 0 and _is_word_char(text[start - 1])
                                          or end < len(text) and _is_word_char(text[end])):
                    continue
                if token.lstrip:
                    while start > cursor and text[start - 1] in WHITESPACE:
                        start -= 1
                if token.rstrip:
                    while end < len(text) and text[end] in WHITESPACE:
                        end += 1
                yield cursor, start, None
                yield start, end, token
                cursor = end
        yield cursor, len(text), None
