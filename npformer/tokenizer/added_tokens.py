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
    whitespace ``lstrip`` / ``rstrip`` took).

    As tokenizers does, tokens with ``normalized`` set are not looked for in the raw text when the
    tokenizer has a ``normalizer``: :meth:`in_normalized` finds them, in their normalized form (a
    lowercasing tokenizer's ``[Q] `` is ``[q] ``), in each ordinary run once it is normalized."""

    def __init__(self, tokens: list[AddedToken], normalizer=None):
        self.tokens = tokens
        late = [t for t in tokens if t.normalized and normalizer is not None]
        self._raw = _Matcher({t.content: t for t in tokens if t not in late})
        self._normalized = _Matcher({normalizer(t.content)[0]: t for t in late}) if late else None

    def __call__(self, text: str):
        return self._raw(text)

    def in_normalized(self, normalized: str):
        """Runs of a normalized ordinary run, as :meth:`__call__` gives them (one ordinary run when
        no token is normalized)."""
        return self._normalized(normalized) if self._normalized is not None else ((0, len(normalized), None),)


class _Matcher:
    def __init__(self, by_content: dict[str, AddedToken]):
        self.by_content = by_content
        longest_first = sorted(by_content, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None

    def __call__(self, text: str):
        cursor = 0
        if self._pattern is not None:
            for m in self._pattern.finditer(text):
                token = self.by_content[m.group()]
                start, end = m.start(), m.end()
                if start < cursor:  # inside the whitespace an rstrip before it took
                    continue
                if token.single_word and (
                    start > 0 and _is_word_char(text[start - 1]) or end < len(text) and _is_word_char(text[end])
                ):
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
