"""BertPreTokenizer (Hugging Face tokenizers ``pre_tokenizers/bert.rs``): split the normalized text
on whitespace, and make each punctuation character (ASCII symbols included) a word of its own;
with ``tokenize_chinese_chars`` each CJK ideograph too (what BERT's "pad CJK with spaces" amounts to).
"""

from __future__ import annotations

import functools
import re
import unicodedata

from npformer.tokenizer.byte_level import class_ranges
from npformer.tokenizer.normalizer import WHITESPACE

# CJK Unified Ideographs blocks, as the fast tokenizer's ``is_chinese_char`` (tokenizers
# ``normalizers/bert.rs``) lists them. Google's ``_is_chinese_char`` starts the Extension E block at
# 0x2B820; the fast tokenizer starts it at 0x2B920, so U+2B820..U+2B91F are not isolated: we follow it.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_punctuation(ch: str) -> bool:
    # ASCII punctuation (incl. symbols such as $ + < = > ^ ` | ~) or a Unicode P* character.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


# Unicode assigns punctuation (P*) only below U+20000: planes 2 and 3 are reserved for ideographs,
# 14 for tags and variation selectors, 15 and 16 for private use (the Unicode roadmap). Scanning
# 0x20000 code points instead of 0x110000 keeps a one-off command's start fast;
# tests/test_tokenizer.py checks the full range against this limit.
PUNCTUATION_END = 0x20000


@functools.cache
def word_pattern(isolate_cjk: bool, ascii_only: bool = False) -> re.Pattern:
    """Regex for pre-tokenization: one isolated punctuation (or CJK) char, or a run of other chars.

    Isolating a CJK ideograph is what BERT's "pad it with spaces" amounts to after the split. The
    classes are written as ranges (Python's regex engine tests a short range list much faster than
    800 single characters). With ``ascii_only`` the pattern matches the same words in ASCII text
    only, with a class of 32 characters (what most texts need).
    """
    end = 128 if ascii_only else PUNCTUATION_END
    cls = class_ranges(cp for cp in range(end) if is_punctuation(chr(cp)))
    cjk = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in CJK_RANGES) if isolate_cjk and not ascii_only else ""
    return re.compile(f"[{cls}{cjk}]|[^ {cls}{cjk}]+")


class BertPreTokenizer:
    """``pre_tokenizer(text)`` -> ``(start, word, None)`` per word (None: the word's characters are
    ``text[start:start + len(word)]``); see :func:`word_pattern`."""

    def __init__(self, tokenize_chinese_chars: bool = True):
        self.pattern = word_pattern(tokenize_chinese_chars)
        self.ascii_pattern = word_pattern(tokenize_chinese_chars, ascii_only=True)

    def matches(self, text: str, at_start: bool = True) -> tuple[re.Pattern, None, str]:
        """``(pattern, None, "")``: the words of ``text`` are the matches of ``pattern``, characters
        unchanged (the short ASCII regex when ``text`` is ASCII). The tokenizer's fast loop reads it."""
        return (self.ascii_pattern if text.isascii() else self.pattern), None, ""

    def __call__(self, text: str, at_start: bool = True):
        return ((m.start(), m.group(), None) for m in self.matches(text)[0].finditer(text))


# ---- the other pre-tokenizers of tokenizer.json (tokenizers ``pre_tokenizers/``). Each is called
# as ``pre_tokenizer(text, at_start)`` (``at_start``: the text begins the original input, which
# Metaspace's ``prepend_scheme="first"`` asks) and yields ``(start, word, chars)``: ``chars[k]`` is
# the index in ``text`` of the word's k-th char, or None when they are ``text[start:start + len(word)]``.

BEHAVIORS = ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous")


def split_spans(text: str, pattern: re.Pattern, behavior: str, invert: bool = False) -> list[tuple[int, int]]:
    """The pieces of ``text`` around the matches of ``pattern``, as tokenizers'
    ``NormalizedString::split`` with a ``SplitDelimiterBehavior`` (``behavior``, snake case);
    ``invert`` splits on what does not match instead. Empty pieces are dropped."""
    runs, last = [], 0  # (start, end, is_match) covering text
    for m in pattern.finditer(text):
        if m.start() == m.end():
            continue
        if m.start() > last:
            runs.append((last, m.start(), invert))
        runs.append((m.start(), m.end(), not invert))
        last = m.end()
    if last < len(text):
        runs.append((last, len(text), invert))
    out: list[list[int]] = []
    if behavior == "removed":
        out = [[s, e] for s, e, hit in runs if not hit]
    elif behavior == "isolated":
        out = [[s, e] for s, e, _ in runs]
    elif behavior in ("contiguous", "merged_with_previous"):
        # contiguous: neighbouring runs alike (both matches, or both not) become one;
        # merged_with_previous: a match joins the run before it
        previous = False
        for s, e, hit in runs:
            joins = hit == previous if behavior == "contiguous" else hit and not previous
            if joins and out:
                out[-1][1] = e
            else:
                out.append([s, e])
            previous = hit
    elif behavior == "merged_with_next":
        following = False
        for s, e, hit in reversed(runs):
            if hit and not following and out:
                out[-1][0] = s
            else:
                out.append([s, e])
            following = hit
        out.reverse()
    else:
        raise ValueError(f"unknown split behavior {behavior!r}; tokenizers has {', '.join(BEHAVIORS)}")
    return [(s, e) for s, e in out if e > s]


class Split:
    """Split on a pattern (tokenizers' ``Split``, and with fixed patterns ``WhitespaceSplit``,
    ``Whitespace``, ``Punctuation``, ``Digits``): see :func:`split_spans`."""

    def __init__(self, pattern: re.Pattern, behavior: str, invert: bool = False):
        if behavior not in BEHAVIORS:
            raise ValueError(f"unknown split behavior {behavior!r}; tokenizers has {', '.join(BEHAVIORS)}")
        self.regex, self.behavior, self.invert = pattern, behavior, invert

    def __call__(self, text: str, at_start: bool = True):
        return ((s, text[s:e], None) for s, e in split_spans(text, self.regex, self.behavior, self.invert))


_WHITE = "[" + "".join(re.escape(c) for c in sorted(WHITESPACE)) + "]"
_WHITE_NOT = "[^" + _WHITE[1:]


def whitespace_split() -> Split:
    """``WhitespaceSplit``: runs between whitespace (Unicode White_Space)."""
    return Split(re.compile(_WHITE), "removed")


@functools.cache
def _category_class(prefix: str) -> str:
    """A regex class of every char whose general category starts with ``prefix``."""
    cps = [cp for cp in range(0x110000) if unicodedata.category(chr(cp)).startswith(prefix)]
    return _as_class(cps)


def _as_class(cps: list[int]) -> str:
    return f"[{class_ranges(cps)}]"


@functools.cache
def rust_word_class() -> str:
    """Rust regex's ``\\w`` as a character class: Alphabetic, marks, decimal digits, connector
    punctuation and the joiners (Python's ``\\w`` leaves marks out and takes other numbers in)."""
    word = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "Pc"}
    extra = [
        *range(0x24B6, 0x24EA),
        *range(0x1F130, 0x1F14A),
        *range(0x1F150, 0x1F16A),
        *range(0x1F170, 0x1F18A),
        0x200C,
        0x200D,
    ]  # Other_Alphabetic symbols (circled and squared letters), Join_Control
    return _as_class(sorted({cp for cp in range(0x110000) if unicodedata.category(chr(cp)) in word} | set(extra)))


def whitespace() -> Split:
    """``Whitespace``: runs of word characters, runs of other non-space characters (tokenizers'
    ``\\w+|[^\\w\\s]+`` with Rust's classes)."""
    w = rust_word_class()
    return Split(re.compile(f"{w}+|(?:(?!{w}){_WHITE_NOT})+"), "removed", invert=True)


def punctuation(behavior: str = "isolated") -> Split:
    """``Punctuation``: each punctuation char (as BertPreTokenizer's) split off by ``behavior``."""
    cls = "".join(re.escape(chr(cp)) for cp in range(PUNCTUATION_END) if is_punctuation(chr(cp)))
    return Split(re.compile(f"[{cls}]"), behavior)


def digits(individual_digits: bool = False) -> Split:
    """``Digits``: numeric chars (Rust's ``char::is_numeric``: categories Nd, Nl, No) isolated,
    each alone or in runs."""
    numeric = _category_class("N")
    return Split(re.compile(numeric if individual_digits else numeric + "+"), "isolated")


class Metaspace:
    """SentencePiece's whitespace handling (tokenizers' ``Metaspace``): spaces become
    ``replacement`` (``▁``), which is put before the text unless it starts with one
    (``prepend_scheme`` ``"always"``; ``"first"``: only when the text begins the input; ``"never"``),
    and with ``split`` each ``▁`` begins a new word. The prepended ``▁`` stands on the first char."""

    def __init__(self, replacement: str = "\u2581", prepend_scheme: str = "always", split: bool = True):
        if prepend_scheme not in ("always", "first", "never"):
            raise ValueError(f"Metaspace prepend_scheme must be 'always', 'first' or 'never', got {prepend_scheme!r}")
        if len(replacement) != 1:
            raise ValueError(f"Metaspace replacement must be one character, got {replacement!r}")
        self.replacement, self.prepend_scheme, self.split = replacement, prepend_scheme, split
        self._pattern = re.compile(re.escape(replacement))
        r = re.escape(replacement)
        self._words = re.compile(f"[ {r}][^ {r}]*|[^ {r}]+")  # each space or replacement begins a word
        self._table = str.maketrans(" ", replacement)

    def matches(self, text: str, at_start: bool = True) -> tuple[re.Pattern, dict, str] | None:
        """With ``split``, ``(pattern, table, prefix)``: the words of ``text`` are the matches of
        ``pattern`` with their characters mapped by ``str.translate(table)`` (a space becomes the
        replacement), the first one after ``prefix`` (a space, which stands on its first char,
        when the replacement is prepended); without ``split``, None. The tokenizer's fast loop reads
        these; :meth:`__call__` gives the same words."""
        if not self.split:
            return None
        prepend = self.prepend_scheme == "always" or self.prepend_scheme == "first" and at_start
        return self._words, self._table, " " if prepend and text and text[0] not in (" ", self.replacement) else ""

    def __call__(self, text: str, at_start: bool = True):
        if not text:
            return
        text = text.replace(" ", self.replacement)
        chars = None
        if not text.startswith(self.replacement) and (
            self.prepend_scheme == "always" or self.prepend_scheme == "first" and at_start
        ):
            text = self.replacement + text
            chars = [0, *range(len(text) - 1)]
        spans = _merged_with_next(text, self.replacement) if self.split else [(0, len(text))]
        for s, e in spans:
            if chars is None:
                yield s, text[s:e], None
            else:
                yield chars[s], text[s:e], chars[s:e]


def _merged_with_next(text: str, char: str) -> list[tuple[int, int]]:
    """:func:`split_spans` with ``merged_with_next`` on one char, by ``str.split``: each occurrence
    of ``char`` begins a piece."""
    spans, at = [], 0
    for k, part in enumerate(text.split(char)):
        start = at - 1 if k else 0  # the char before this part (none before the first)
        end = at + len(part)
        if end > start:
            spans.append((start, end))
        at = end + 1
    return spans


class SequencePreTokenizer:
    """Several pre-tokenizers, each splitting the words of the one before (tokenizers' ``Sequence``)."""

    def __init__(self, steps: list):
        self.steps = steps

    def __call__(self, text: str, at_start: bool = True):
        words = [(0, text, None)]
        for step in self.steps:
            out = []
            for start, word, chars in words:
                for s, piece, inner in step(word, at_start and start == 0):
                    where = [
                        chars[k] if chars is not None else start + k
                        for k in (inner if inner is not None else range(s, s + len(piece)))
                    ]
                    out.append((where[0] if where else start, piece, where))
            words = out
        return iter(words)
