"""BertNormalizer (Hugging Face tokenizers ``normalizers/bert.rs``): clean text, strip accents,
lowercase, applied in that order, char by char, remembering which original character each output
character came from (the offsets' source). CJK ideographs are isolated by the pre-tokenizer instead
of padded with spaces here: the same words, one fewer pass over the text.

Reference behaviour: ``BertTokenizerFast``; tested exhaustively over Unicode ranges in
``tests/test_tokenizer.py``.
"""

from __future__ import annotations

import re
import unicodedata
from array import array

# Rust's ``char::is_whitespace`` (Unicode White_Space), which the fast tokenizer uses.
WHITESPACE = frozenset(
    "\t\n\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\x0b\x0c"
)


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
        # what each ASCII character becomes, for str.translate's fast ASCII path
        self._ascii = {cp: self.char(chr(cp)) for cp in range(128)}

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
        if text.isascii():  # the common case: one C pass, no per-character Python
            normalized = text.translate(self._ascii)
            if len(normalized) == len(text):  # nothing removed: char for char
                return normalized, None
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
            risky = any(unicodedata.combining(d) and unicodedata.category(d) != "Mn" for d in unicodedata.normalize("NFD", ch))
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
        items = canonical_order(items)
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


# ---- the other normalizers of tokenizer.json (tokenizers ``normalizers/``), each ``(text) ->
# (normalized, align or None)`` as BertNormalizer: ``align[i]`` is the index in ``text`` of the
# character ``normalized[i]`` stands on (tokenizers' ``NormalizedString`` alignments, kept per char).


def transformed(text: str, changes) -> tuple[str, list[int]]:
    """Apply tokenizers' ``NormalizedString::transform``: ``changes`` is ``[(char, change), ...]``
    over ``text`` in order, ``change`` 0 for a char that replaces the next one of ``text``, 1 for an
    inserted char (it stands on the char before it), ``-n`` for one that replaces the next char and
    removes ``n`` more. Chars of ``text`` not consumed at the end are dropped."""
    out, align, pos = [], [], 0
    for ch, change in changes:
        if change > 0:
            align.append(max(pos - 1, 0))
        else:
            align.append(pos)
            pos += 1 - change
        out.append(ch)
    return "".join(out), align


def compose(first: list[int] | None, second: list[int] | None) -> list[int] | None:
    """The alignment of two normalizers run one after the other."""
    if first is None or second is None:
        return second if first is None else first
    return [first[i] for i in second]


def unicode_form(form: str):
    """NFC / NFD / NFKC / NFKD (tokenizers' ``normalizers/unicode.rs``). A decomposition's chars stand
    on the char they came from; a composition on its first char. Each run of a starter and the
    combining marks after it is normalized as a whole (composition and canonical reordering stay
    inside such a run)."""

    def normalize(text: str) -> tuple[str, list[int] | None]:
        if unicodedata.is_normalized(form, text):
            return text, None
        out, align, start = [], [], 0
        for end in range(1, len(text) + 1):
            if end < len(text) and unicodedata.combining(text[end]):
                continue
            run = text[start:end]
            each = [unicodedata.normalize(form, c) for c in run]
            whole = unicodedata.normalize(form, run)
            if "".join(each) == whole:
                for k, piece in enumerate(each):
                    align.extend([start + k] * len(piece))
            else:
                align.extend(_reordered(run, form, start, whole))
            out.append(whole)
            start = end
        return "".join(out), align

    return normalize


def canonical_order(items: list) -> list:
    """Unicode canonical ordering of ``items`` whose first field is a char: each run of combining
    marks sorted stably by combining class (starters stay where they are)."""
    out, i = [], 0
    while i < len(items):
        j = i
        while j < len(items) and unicodedata.combining(items[j][0]):
            j += 1
        if j > i:
            out += sorted(items[i:j], key=lambda t: unicodedata.combining(t[0]))
            i = j
        else:
            out.append(items[i])
            i += 1
    return out


def _reordered(run: str, form: str, start: int, whole: str) -> list[int]:
    """Positions of ``normalize(form, run)``'s chars when canonical reordering moved marks across
    the run's chars: tokenizers' rule (as in :meth:`BertNormalizer._normalize_reordered`), the first
    char of each char's decomposition takes the next char of the run, the others share the last one
    taken; a composition (NFC, NFKC) stands where its first char stood. Should the result not spell
    the normalized run, every char stands on the run's start."""
    decomposed = "NFKD" if form in ("NFKC", "NFKD") else "NFD"
    items = [(d, k == 0) for c in run for k, d in enumerate(unicodedata.normalize(decomposed, c))]
    chars, taken = [], -1
    for ch, first in canonical_order(items):
        if first or taken < 0:
            taken += 1
        chars.append([ch, start + min(taken, len(run) - 1)])
    if form in ("NFC", "NFKC"):
        chars = _composed(chars)
    if "".join(c for c, _ in chars) != whole:
        return [start] * len(whole)
    return [p for _, p in chars]


def _composed(chars: list[list]) -> list[list]:
    """Unicode canonical composition of ``[char, position]`` items: a mark that is not blocked joins
    the starter before it into its primary composite, which keeps the starter's position."""
    out: list[list] = []
    starter, last = None, -1  # index of the last starter in out; combining class of the last char kept
    for ch, pos in chars:
        ccc = unicodedata.combining(ch)
        if starter is not None and (last < ccc or last == 0 and starter == len(out) - 1 and ccc == 0):
            pair = unicodedata.normalize("NFC", out[starter][0] + ch)
            if len(pair) == 1:
                out[starter][0] = pair
                continue
        if ccc == 0:
            starter, last = len(out), 0
        else:
            last = ccc
        out.append([ch, pos])
    return out


def lowercase(text: str) -> tuple[str, list[int] | None]:
    """Lowercase (Rust's ``char::to_lowercase``: İ becomes two chars, both on İ)."""
    low = "".join(c.lower() for c in text)  # per char: no final-sigma rule, as Rust's
    if len(low) == len(text):
        return low, None
    align = []
    for i, c in enumerate(text):
        align.extend([i] * len(c.lower()))
    return low, align


def strip_accents(text: str) -> tuple[str, list[int] | None]:
    """Remove combining marks (categories Mn, Mc, Me), as tokenizers' ``StripAccents`` (after an
    NFD/NFKD); BertNormalizer's ``strip_accents`` removes Mn only."""
    keep = [i for i, c in enumerate(text) if not unicodedata.category(c).startswith("M")]
    if len(keep) == len(text):
        return text, None
    return "".join(text[i] for i in keep), keep


def strip(left: bool, right: bool):
    """Remove leading / trailing whitespace (Unicode White_Space), tokenizers' ``Strip``."""

    def normalize(text: str) -> tuple[str, list[int] | None]:
        start, end = 0, len(text)
        while left and start < end and text[start] in WHITESPACE:
            start += 1
        while right and end > start and text[end - 1] in WHITESPACE:
            end -= 1
        if (start, end) == (0, len(text)):
            return text, None
        return text[start:end], list(range(start, end))

    return normalize


def replace(pattern: re.Pattern, content: str):
    """Each match of ``pattern`` becomes ``content`` (tokenizers' ``Replace``: string or regex); the
    new chars stand on the last char of the match."""

    def normalize(text: str) -> tuple[str, list[int] | None]:
        out, align, last = [], [], 0
        for m in pattern.finditer(text):
            if m.start() == m.end():
                continue
            out.append(text[last : m.start()])
            align.extend(range(last, m.start()))
            out.append(content)
            align.extend([m.end() - 1] * len(content))
            last = m.end()
        if not out:
            return text, None
        out.append(text[last:])
        align.extend(range(last, len(text)))
        return "".join(out), align

    return normalize


def prepend(prefix: str):
    """``prefix`` before a non-empty text, standing on its first char (tokenizers' ``Prepend``)."""

    def normalize(text: str) -> tuple[str, list[int] | None]:
        if not text or not prefix:
            return text, None
        return prefix + text, [0] * len(prefix) + list(range(len(text)))

    return normalize


def sequence(steps: list):
    """Several normalizers one after the other (tokenizers' ``Sequence``)."""

    def normalize(text: str) -> tuple[str, list[int] | None]:
        align = None
        for step in steps:
            text, more = step(text)
            align = compose(align, more)
        return text, align

    return normalize
