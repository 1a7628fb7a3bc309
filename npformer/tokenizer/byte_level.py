"""Byte-level pre-tokenization and decoding (GPT-2, RoBERTa, ModernBERT), as Hugging Face
tokenizers' ``pre_tokenizers/byte_level.rs``.

Text is split by GPT-2's regex (contractions, letters, numbers, other symbols, whitespace runs;
each but the contractions and whitespace may take one leading space), then every UTF-8 byte of a
piece becomes one printable character (GPT-2's ``bytes_to_unicode``: printable Latin-1 bytes stand
for themselves, the others are moved above U+0100, so a space is ``Ġ``). A BPE model then merges
those characters. Reference: Radford et al. 2019 (GPT-2, ``encoder.py``) and ``tokenizers``.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from npformer.tokenizer.normalizer import WHITESPACE

# Letters (L*) and numbers (N*) lie below U+40000 in every Unicode version so far (planes 4-13
# are unassigned, 14 holds tags, 15-16 private use); tests/test_tokenizer_bpe.py checks the range.
CLASS_END = 0x40000


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of each byte (0-255) to a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTE_CHARS = bytes_to_unicode()
CHAR_BYTES = {c: b for b, c in BYTE_CHARS.items()}
_BYTE_TABLE = [BYTE_CHARS[b] for b in range(256)]


def class_ranges(codepoints) -> str:
    """A regex character class body for sorted code points, as ranges."""
    out, start, prev = [], None, None
    for cp in codepoints:
        if start is None:
            start = prev = cp
        elif cp == prev + 1:
            prev = cp
        else:
            out.append((start, prev))
            start = prev = cp
    if start is not None:
        out.append((start, prev))
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in out)


@functools.cache
def gpt2_pattern(ascii_only: bool = False) -> re.Pattern:
    """GPT-2's split regex, ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``,
    for Python's ``re``: the Unicode classes spelled out, ``\\s`` as Unicode White_Space (what the
    Oniguruma engine of ``tokenizers`` matches; Python's ``\\s`` would also take U+001C-U+001F).
    With ``ascii_only`` the classes hold their ASCII members only: the same matches in ASCII text,
    four times faster (Python's engine tests long class lists one range at a time)."""
    letters, numbers = [], []
    for cp in range(128 if ascii_only else CLASS_END):
        category = unicodedata.category(chr(cp))[0]
        if category == "L":
            letters.append(cp)
        elif category == "N":
            numbers.append(cp)
    L, N = class_ranges(letters), class_ranges(numbers)  # noqa: N806 - the Unicode classes' names
    S = class_ranges(sorted(cp for cp in map(ord, WHITESPACE) if cp < 128 or not ascii_only))  # noqa: N806
    return re.compile(f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


class ByteLevel:
    """The ``ByteLevel`` pre-tokenizer: ``pre_tokenizer(text)`` -> ``(start, word, align)`` per piece,
    ``word`` in byte characters and ``align[k]`` the index in ``text`` of the character whose byte
    ``word[k]`` is.

    Args:
        add_prefix_space: put a space before a text that does not start with one (so that its first
            word is spelled as the others); the space aligns with the first character.
        use_regex: split with GPT-2's regex (else the whole text is one piece).
        trim_offsets: kept for the post-processor (:func:`trim_offsets`), as in ``tokenizers``.
    """

    def __init__(self, add_prefix_space: bool = False, use_regex: bool = True, trim_offsets: bool = True):
        self.add_prefix_space, self.use_regex, self.trim_offsets = add_prefix_space, use_regex, trim_offsets
        self._pattern = gpt2_pattern() if use_regex else None

    def matches(self, text: str, at_start: bool = True) -> tuple[re.Pattern, dict, str] | None:
        """``(pattern, table, "")`` when the words of ``text`` are the matches of ``pattern`` with their
        characters mapped by ``str.translate(table)``, each to the byte characters of its UTF-8
        encoding (one for one in ASCII text, where the pattern is the faster ASCII one), when no
        space is added; else None. The tokenizer's fast loop reads these; :meth:`__call__` gives the
        same words."""
        if self._pattern is None or self.add_prefix_space and text and not text.startswith(" "):
            return None
        return (gpt2_pattern(ascii_only=True), _ASCII, "") if text.isascii() else (self._pattern, _UTF8, "")

    def __call__(self, text: str, at_start: bool = True):
        prefixed = self.add_prefix_space and text and not text.startswith(" ")
        if prefixed:
            text = " " + text
        pieces = self._pattern.finditer(text) if self._pattern is not None else [_Whole(text)]
        for m in pieces:
            piece, start = m.group(), m.start()
            if piece.isascii():
                word = piece.translate(_ASCII)
                if not prefixed:  # one byte per character: its characters are text[start:start + len]
                    yield start, word, None
                    continue
                align = list(range(start, start + len(piece)))
            else:
                encoded = [piece[k].encode("utf-8") for k in range(len(piece))]
                word = "".join(_BYTE_TABLE[b] for chunk in encoded for b in chunk)
                align = [start + k for k, chunk in enumerate(encoded) for _ in chunk]
            if prefixed:  # positions in the text as given: the added space stands on its first character
                align = [max(a - 1, 0) for a in align]
            yield align[0], word, align


class _Whole:
    def __init__(self, text: str):
        self.text = text

    def group(self) -> str:
        return self.text

    def start(self) -> int:
        return 0


_ASCII = {b: BYTE_CHARS[b] for b in range(128)}


class _ByteChars(dict):
    """A ``str.translate`` table from each character to the byte characters of its UTF-8 encoding,
    an entry made the first time a character is looked up."""

    def __missing__(self, code: int) -> str:
        chars = self[code] = "".join(_BYTE_TABLE[b] for b in chr(code).encode("utf-8"))
        return chars


_UTF8 = _ByteChars(_ASCII)


_TRIM_CHARS = "Ġ" + "".join(sorted(WHITESPACE))  # what process_offsets trims off a token's ends
_TRIMMED = frozenset(_TRIM_CHARS)


def is_space_char(ch: str) -> bool:
    """A byte-level ``Ġ`` or a whitespace character (what ``process_offsets`` trims)."""
    return ch == "Ġ" or ch in WHITESPACE


_NO_SPACES = (0, 0)


def _space_counts(token: str) -> tuple[int, int]:
    """How many spaces (``Ġ`` or whitespace) ``token`` starts and ends with (:data:`_NO_SPACES`
    itself when none)."""
    counted = len(token) - len(token.lstrip(_TRIM_CHARS)), len(token) - len(token.rstrip(_TRIM_CHARS))
    return _NO_SPACES if counted == _NO_SPACES else counted


_SPACE_COUNTS: dict[str, tuple[int, int]] = {}  # token -> _space_counts(token), for the first TRIM_CACHE tokens seen
TRIM_CACHE = 100_000


def trim_offsets(tokens: list[str], add_prefix_space: bool, at: int, starts, ends) -> None:
    """Offsets without the spaces a token starts or ends with (``tokenizers``'
    ``byte_level::process_offsets``), in place: ``starts[at + i]``, ``ends[at + i]`` are the
    character offsets of ``tokens[i]`` (int arrays or lists). The first token keeps the one space
    ``add_prefix_space`` put before it."""
    counts = _SPACE_COUNTS
    for i, token in enumerate(tokens):
        counted = counts.get(token)
        if counted is None:
            counted = _space_counts(token)
            if len(counts) < TRIM_CACHE:
                counts[token] = counted
        if counted is _NO_SPACES:
            continue
        leading, trailing = counted
        start, end = starts[at + i], ends[at + i]
        if leading == 1 and add_prefix_space and (i == 0 or start == 0):
            leading = 0
        if leading:
            start = starts[at + i] = min(start + leading, end)
        if trailing and end >= trailing:
            ends[at + i] = max(end - trailing, start)


def decode_bytes(tokens: list[str]) -> str:
    """The ``ByteLevel`` decoder: each token's byte characters back to bytes, then UTF-8 over the
    whole (an invalid sequence becomes U+FFFD, as ``String::from_utf8_lossy``). A token with a
    character outside the byte map (an already decoded word, as Transformers' NER pipeline passes
    them) contributes its own UTF-8 bytes, as tokens' ``ByteLevel::decode_chain``."""
    out = bytearray()
    for token in tokens:
        try:
            out += bytes(CHAR_BYTES[ch] for ch in token)
        except KeyError:
            out += token.encode("utf-8")
    return out.decode("utf-8", errors="replace")
