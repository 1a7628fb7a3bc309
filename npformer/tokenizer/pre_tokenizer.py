"""BertPreTokenizer (Hugging Face tokenizers ``pre_tokenizers/bert.rs``): split the normalized text
on whitespace, and make each punctuation character (ASCII symbols included) a word of its own;
with ``tokenize_chinese_chars`` each CJK ideograph too (what BERT's "pad CJK with spaces" amounts to).
"""

from __future__ import annotations

import functools
import re
import unicodedata

# CJK Unified Ideographs blocks, as the fast tokenizer's ``is_chinese_char`` (tokenizers
# ``normalizers/bert.rs``) lists them. Google's ``_is_chinese_char`` starts the Extension E block at
# 0x2B820; the fast tokenizer starts it at 0x2B920, so U+2B820..U+2B91F are not isolated: we follow it.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


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
def word_pattern(isolate_cjk: bool) -> re.Pattern:
    """Regex for pre-tokenization: one isolated punctuation (or CJK) char, or a run of other chars.

    Isolating a CJK ideograph is what BERT's "pad it with spaces" amounts to after the split.
    """
    cls = "".join(re.escape(chr(cp)) for cp in range(PUNCTUATION_END) if is_punctuation(chr(cp)))
    cjk = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in CJK_RANGES) if isolate_cjk else ""
    return re.compile(f"[{cls}{cjk}]|[^ {cls}{cjk}]+")


class BertPreTokenizer:
    """``pre_tokenizer(text)`` -> ``(start, word, None)`` per word (None: the word's characters are
    ``text[start:start + len(word)]``); see :func:`word_pattern`. ``pattern`` is the regex whose
    matches are the words (what the tokenizer's loop reads directly)."""

    def __init__(self, tokenize_chinese_chars: bool = True):
        self.pattern = word_pattern(tokenize_chinese_chars)

    def __call__(self, text: str):
        return ((m.start(), m.group(), None) for m in self.pattern.finditer(text))
