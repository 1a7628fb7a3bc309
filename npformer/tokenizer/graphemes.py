"""Extended grapheme clusters (Unicode UAX #29, rules GB3-GB13), the unit SentencePiece's
precompiled normalizer looks up (tokenizers' ``Precompiled`` walks ``graphemes(true)`` of the
``unicode-segmentation`` crate). The property tables are :mod:`.grapheme_table`. The Indic
conjunct rule GB9c (Unicode 15.1) is not applied: such clusters are longer than the 6 bytes the
normalizer looks up whole, so it does not change what the normalizer does.
"""

from __future__ import annotations

import bisect
import functools

from npformer.tokenizer.grapheme_table import CLASSES, EXTENDED_PICTOGRAPHIC

_STARTS: list[int] = []
_ENDS: list[int] = []
_NAMES: list[str] = []
for _name, _ranges in CLASSES.items():
    for _lo, _hi in _ranges:
        _STARTS.append(_lo)
        _ENDS.append(_hi)
        _NAMES.append(_name)
_ORDER = sorted(range(len(_STARTS)), key=_STARTS.__getitem__)
_STARTS, _ENDS, _NAMES = [_STARTS[i] for i in _ORDER], [_ENDS[i] for i in _ORDER], [_NAMES[i] for i in _ORDER]
_PICT_STARTS = [lo for lo, _ in EXTENDED_PICTOGRAPHIC]
_PICT_ENDS = [hi for _, hi in EXTENDED_PICTOGRAPHIC]


@functools.lru_cache(maxsize=65536)
def break_class(ch: str) -> str:
    """The Grapheme_Cluster_Break value of ``ch`` ("Other" when none), "ExtPict" for an
    Extended_Pictographic char of class Other."""
    cp = ord(ch)
    k = bisect.bisect_right(_STARTS, cp) - 1
    if k >= 0 and cp <= _ENDS[k]:
        return _NAMES[k]
    k = bisect.bisect_right(_PICT_STARTS, cp) - 1
    return "ExtPict" if k >= 0 and cp <= _PICT_ENDS[k] else "Other"


_HANGUL_JOINS = {
    ("L", "L"),
    ("L", "V"),
    ("L", "LV"),
    ("L", "LVT"),
    ("LV", "V"),
    ("LV", "T"),
    ("V", "V"),
    ("V", "T"),
    ("LVT", "T"),
    ("T", "T"),
}


def graphemes(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` char spans of the extended grapheme clusters of ``text``, in order."""
    spans, start = [], 0
    prev = None
    pict_zwj = False  # GB11: ExtPict Extend* ZWJ seen just before
    in_pict = False  # inside ExtPict Extend*
    regional = 0  # GB12/13: regional indicators in the current run
    for i, ch in enumerate(text):
        cls = break_class(ch)
        if prev is not None and _breaks(prev, cls, pict_zwj, regional):
            spans.append((start, i))
            start = i
        pict_zwj = in_pict and cls == "ZWJ"
        in_pict = cls == "ExtPict" or in_pict and cls == "Extend"
        regional = regional + 1 if cls == "Regional_Indicator" else 0
        prev = cls
    if text:
        spans.append((start, len(text)))
    return spans


def _breaks(prev: str, cls: str, pict_zwj: bool, regional: int) -> bool:  # noqa: PLR0911 - the rules in order
    if prev == "CR" and cls == "LF":  # GB3
        return False
    if prev in ("Control", "CR", "LF") or cls in ("Control", "CR", "LF"):  # GB4, GB5
        return True
    if (prev, cls) in _HANGUL_JOINS:  # GB6-GB8
        return False
    if cls in ("Extend", "ZWJ", "SpacingMark") or prev == "Prepend":  # GB9, GB9a, GB9b
        return False
    if pict_zwj and cls == "ExtPict":  # GB11
        return False
    if prev == "Regional_Indicator" and cls == "Regional_Indicator" and regional % 2 == 1:  # GB12, GB13
        return False
    return True  # GB999
