"""SentencePiece's precompiled normalizer: the ``precompiled_charsmap`` of a SentencePiece model
(``nmt_nfkc`` and its kin), which XLM-RoBERTa, CamemBERT, ALBERT and DeBERTa-v3 tokenizers carry.

The charsmap is ``[trie size: u32 little-endian][trie: u32 units][normalized strings, each ending
in NUL]``; the trie is a darts-clone double array over UTF-8 bytes whose leaves hold offsets into
the strings. As Hugging Face tokenizers applies it (``normalizers/precompiled.rs`` with the
``spm_precompiled`` crate): each grapheme cluster shorter than 6 bytes is looked up whole, and
replaced by the string of the *shortest* key that prefixes it; otherwise each of its chars is
looked up alone. Replacements keep tokenizers' alignment (a longer replacement's extra chars stand
on the last char they follow; a shorter one drops the chars after its last).
"""

from __future__ import annotations

import base64
import binascii
import struct

from npformer.tokenizer.graphemes import break_class, graphemes
from npformer.tokenizer.normalizer import transformed


class Precompiled:
    """``precompiled(text)`` -> ``(normalized, align or None)``, as the other normalizers.

    Args:
        charsmap: the ``precompiled_charsmap`` bytes, or their base64 (``tokenizer.json``'s field).

    Raises ``ValueError`` when the charsmap is not base64 or its trie size does not fit.
    """

    def __init__(self, charsmap: bytes | str):
        if isinstance(charsmap, str):
            try:
                charsmap = base64.b64decode(charsmap, validate=True)
            except binascii.Error as e:
                raise ValueError(f"precompiled_charsmap is not base64 ({e})") from None
        if len(charsmap) < 4:
            raise ValueError(f"precompiled_charsmap holds {len(charsmap)} bytes, fewer than its 4-byte header")
        (trie_size,) = struct.unpack_from("<I", charsmap)
        if trie_size % 4 or 4 + trie_size > len(charsmap):
            raise ValueError(f"precompiled_charsmap: a trie of {trie_size} bytes does not fit in {len(charsmap)}")
        self.units = struct.unpack_from(f"<{trie_size // 4}I", charsmap, 4)
        self.strings = charsmap[4 + trie_size :]
        self._cache: dict[str, str | None] = {}
        # ASCII chars (and CR LF) the charsmap rewrites: an ASCII text without them is unchanged
        self._ascii = frozenset(c for c in map(chr, range(128)) if self.lookup(c) is not None)
        self._ascii_crlf = self.lookup("\r\n") is not None

    def lookup(self, chunk: str) -> str | None:
        """The replacement of ``chunk``: the normalized string of the shortest key that prefixes it
        (None: no key does)."""
        if chunk in self._cache:
            return self._cache[chunk]
        found = None
        units, node = self.units, 0
        node ^= _offset(units[0])
        for byte in chunk.encode("utf-8"):
            if byte == 0:
                break
            node ^= byte
            if node >= len(units):
                break
            unit = units[node]
            if unit & 0x800000FF != byte:  # the unit's label
                break
            node ^= _offset(unit)
            if (unit >> 8) & 1:  # has a leaf: its value is an offset into the strings
                start = units[node] & 0x7FFFFFFF
                end = self.strings.find(b"\0", start)
                found = self.strings[start : end if end >= 0 else len(self.strings)].decode("utf-8", "replace")
                break
        self._cache[chunk] = found
        return found

    def __call__(self, text: str) -> tuple[str, list[int] | None]:
        if text.isascii() and self._ascii.isdisjoint(text) and not (self._ascii_crlf and "\r\n" in text):
            return text, None  # each char its own grapheme, none rewritten
        distinct = set(text)
        if "\r\n" not in text and all(break_class(c) in SINGLE_CLASSES for c in distinct):
            return self._by_char(text, {c for c in distinct if self.lookup(c) is not None})
        changes: list[tuple[str, int]] = []
        modified = False
        for start, end in graphemes(text):
            cluster = text[start:end]
            if len(cluster.encode("utf-8")) < 6:
                norm = self.lookup(cluster)
                if norm is not None:
                    modified = True
                    _replace(changes, len(cluster), norm)
                    continue
            for ch in cluster:
                norm = self.lookup(ch)
                if norm is not None:
                    modified = True
                    _replace(changes, 1, norm)
                else:
                    changes.append((ch, 0))
        if not modified:
            return text, None
        return transformed(text, changes)

    def _by_char(self, text: str, rewritten: set[str]) -> tuple[str, list[int] | None]:
        """:meth:`__call__` for a text whose every char is a grapheme cluster of its own."""
        if not rewritten:
            return text, None
        changes: list[tuple[str, int]] = []
        for ch in text:
            if ch in rewritten:
                _replace(changes, 1, self.lookup(ch))
            else:
                changes.append((ch, 0))
        return transformed(text, changes)


# Grapheme break classes of chars that always stand alone in a cluster (no CR LF pair in the text)
SINGLE_CLASSES = frozenset(("Other", "ExtPict", "Control", "CR", "LF"))


def _offset(unit: int) -> int:
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


def _replace(changes: list[tuple[str, int]], old: int, new: str) -> None:
    """tokenizers' ``replace``: ``new``'s chars replace ``old`` chars; extra chars are insertions,
    missing ones are removed with the last char."""
    changes.extend((c, 0) for c in new)
    diff = len(new) - old
    if diff > 0:
        for k in range(len(changes) - diff, len(changes)):
            changes[k] = (changes[k][0], 1)
    elif diff < 0 and changes:
        changes[-1] = (changes[-1][0], changes[-1][1] + diff)
