"""BertNormalizer (Hugging Face tokenizers ``normalizers/bert.rs``): clean text, strip accents,
lowercase, applied in that order, char by char, remembering which original character each output
character came from (the offsets' source). CJK ideographs are isolated by the pre-tokenizer instead
of padded with spaces here: the same words, one fewer pass over the text.

Reference behaviour: ``BertTokenizerFast``; tested exhaustively over Unicode ranges in
``tests/test_tokenizer.py``.
"""

from __future__ import annotations

import unicodedata
from array import array

# Rust's ``char::is_whitespace`` (Unicode White_Space), which the fast tokenizer uses.
WHITESPACE = frozenset("\t\n\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                        "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\x0b\x0c")


def is_control(ch: str) -> bool:
    # Reference: tokenizers ``normalizers/bert.rs``: categories Cc, Cf, Co (not \t\n\r). Unlike the
    # slow tokenizer, unassigned code points (Cn) are kept.
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def clean_char(ch: str) -> str:
    """BertNormalizer's clean_text for one char: '' for NUL, U+FFFD and controls, ' ' for whitespace."""
    if ch == "\x00" or ch == "\ufffd" or is_control(ch):
        return ""
    return " " if ch in WHITESPACE else ch


class BertNormalizer:
    """What the text becomes before pre-tokenization.

    Args:
        lowercase: lowercase every character (``do_lower_case``).
        strip_accents: decompose (NFD) and drop non-spacing marks (category Mn).

    ``normalizer(text)`` -> ``(normalized, align)``: ``align[i]`` is the index in ``text`` of the
    character ``normalized[i]`` came from, or ``align`` is None when the mapping is one to one.
    """

    def __init__(self, lowercase: bool, strip_accents: bool):
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self._char_map: dict[str, str] = {}
        self._reorder_cache: dict[str, bool] = {}

    def char(self, ch: str) -> str:
        """What one original character becomes: '' (removed), itself, or several characters."""
        out = self._char_map.get(ch)
        if out is None:
            out = clean_char(ch)
            if out == ch:
                if self.strip_accents:
                    out = "".join(c for c in unicodedata.normalize("NFD", out) if unicodedata.category(c) != "Mn")
                if self.lowercase:
                    out = "".join(c.lower() for c in out)
            self._char_map[ch] = out
        return out

    def __call__(self, text: str) -> tuple[str, array | None]:
        """Normalized text and, unless it is char-for-char, the original index of each char."""
        chars = set(text)
        char_map = [self.char(c) for c in chars]
        if self.strip_accents and any(self._may_reorder(c) for c in chars):
            return self._normalize_reordered(text)
        normalized = text.translate(self._TranslateTable(self._char_map))
        if all(len(m) == 1 for m in char_map):
            return normalized, None
        align = array("i")  # 4 bytes per normalized char
        for i, c in enumerate(text):
            n = len(self._char_map[c])
            if n == 1:
                align.append(i)
            elif n:
                align.extend([i] * n)
        return normalized, align

    def _may_reorder(self, ch: str) -> bool:
        """Whether NFD's canonical reordering could move ``ch``'s kept (non-Mn) marks across chars."""
        risky = self._reorder_cache.get(ch)
        if risky is None:
            risky = any(unicodedata.combining(d) and unicodedata.category(d) != "Mn"
                        for d in unicodedata.normalize("NFD", ch))
            self._reorder_cache[ch] = risky
        return risky

    def _normalize_reordered(self, text: str) -> tuple[str, list[int]]:
        # The fast tokenizer decomposes the whole cleaned text, so NFD's canonical reordering can
        # move combining marks across original characters. Its alignment rule (tokenizers'
        # NormalizedString::transform): the first char of each decomposition takes the next
        # original char, in order, and the other chars of a decomposition share the last one taken.
        # Only marks of class != 0 that are not Mn survive stripping (e.g. U+302E), so only they
        # can be seen to move; texts without them take the per-char path.
        items = []  # (char, original index, first char of its decomposition)
        for i, c in enumerate(text):
            for k, d in enumerate(unicodedata.normalize("NFD", clean_char(c))):
                items.append((d, i, k == 0))
        firsts = [i for _, i, first in items if first]
        start = 0
        while start < len(items):  # canonical ordering: stable sort of each run of marks by class
            end = start
            while end < len(items) and unicodedata.combining(items[end][0]):
                end += 1
            if end > start + 1:
                items[start:end] = sorted(items[start:end], key=lambda t: unicodedata.combining(t[0]))
            start = end + 1 if end == start else end
        pieces, align, taken = [], [], -1
        for ch, _, first in items:
            if first or taken < 0:
                taken += 1
            position = firsts[min(taken, len(firsts) - 1)]
            if unicodedata.category(ch) == "Mn":
                continue
            low = ch.lower() if self.lowercase else ch
            pieces.append(low)
            align.extend([position] * len(low))
        return "".join(pieces), align

    class _TranslateTable(dict):
        def __init__(self, char_map: dict[str, str]):
            super().__init__()
            self.char_map = char_map

        def __missing__(self, cp: int) -> str:
            return self.char_map[chr(cp)]
