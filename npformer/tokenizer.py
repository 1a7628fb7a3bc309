"""WordPiece tokenizer with exact parity with Transformers' ``BertTokenizerFast``.

Algorithm: Google BERT's BasicTokenizer + WordpieceTokenizer (Devlin et al. 2019,
``tokenization.py``), in the form Hugging Face ``tokenizers`` runs it (``BertNormalizer``,
``BertPreTokenizer``, ``WordPiece``, BERT's ``TemplateProcessing``), including its character
offsets, special tokens found in raw text, pair truncation and overflowing windows with a stride.

Pipeline of one text:
  1. split out special tokens written in the text (``[MASK]``, ``[SEP]`` ...), matched verbatim;
  2. normalize each other segment char by char, keeping which original char each output char
     came from: clean text (drop NUL, U+FFFD and control chars; any whitespace -> space)
     -> strip accents (NFD, drop Mn) -> lowercase;
  3. pre-tokenize: split on spaces, isolate each punctuation and CJK character;
  4. WordPiece: greedy longest-match-first, ``##`` continuations, a word that cannot be covered
     (or is longer than ``max_input_chars_per_word``) becomes one ``[UNK]``;
  5. truncate (``longest_first`` / ``only_first`` / ``only_second``, with stride windows), add
     ``[CLS] A [SEP] (B [SEP])``, pad.

Where the slow ``BertTokenizer`` disagrees with the fast one we follow the fast one (see
``tests/test_tokenizer.py::test_fast_and_slow_disagree``).
"""

from __future__ import annotations

import functools
import json
from array import array
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npformer.config import read_json

SPECIAL_TOKEN_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")

# CJK Unified Ideographs blocks, as the fast tokenizer's ``is_chinese_char`` (tokenizers
# ``normalizers/bert.rs``) lists them. Google's ``_is_chinese_char`` starts the Extension E block at
# 0x2B820; the fast tokenizer starts it at 0x2B920, so U+2B820..U+2B91F are not isolated: we follow it.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# Rust's ``char::is_whitespace`` (Unicode White_Space), which the fast tokenizer uses.
_WHITESPACE = frozenset("\t\n\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                        "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\x0b\x0c")


def _is_control(ch: str) -> bool:
    # Reference: tokenizers ``normalizers/bert.rs``: categories Cc, Cf, Co (not \t\n\r). Unlike the
    # slow tokenizer, unassigned code points (Cn) are kept.
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _clean_char(ch: str) -> str:
    """BertNormalizer's clean_text for one char: '' for NUL, U+FFFD and controls, ' ' for whitespace."""
    if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
        return ""
    return " " if ch in _WHITESPACE else ch


def _is_punctuation(ch: str) -> bool:
    # ASCII punctuation (incl. symbols such as $ + < = > ^ ` | ~) or a Unicode P* character.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


@functools.cache
def _word_pattern(isolate_cjk: bool) -> re.Pattern:
    """Regex for pre-tokenization: one isolated punctuation (or CJK) char, or a run of other chars.

    Isolating a CJK ideograph is what BERT's "pad it with spaces" amounts to after the split.
    """
    cls = "".join(re.escape(chr(cp)) for cp in range(0x110000) if _is_punctuation(chr(cp)))
    cjk = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _CJK_RANGES) if isolate_cjk else ""
    return re.compile(f"[{cls}{cjk}]|[^ {cls}{cjk}]+")


@dataclass
class Encoding:
    """One encoded sequence (or one overflow window), as ``tokenizers.Encoding``.

    All lists have the same length ``seq_len``. ``offsets`` are ``(start, end)`` character offsets
    into the original text of the sequence each token came from, ``(0, 0)`` for special tokens.
    ``word_ids`` index the pre-tokenized words of that sequence (None for special tokens);
    ``sequence_ids`` are 0 (first text), 1 (second text) or None (special tokens).
    ``truncated`` is True when tokens of the input(s) are not in this window (truncation cut them
    or they are in other overflow windows).
    """

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    sequence_ids: list[int | None]
    type_ids: list[int] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)
    attention_mask: list[int] = field(default_factory=list)
    overflow_to_sample: int = 0
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def pad(self, length: int, pad_id: int, pad_token: str) -> None:
        """Right-pad in place to ``length`` tokens (attention 0, special mask 1, offsets (0, 0))."""
        n = length - len(self.ids)
        if n <= 0:
            return
        self.ids += [pad_id] * n
        self.tokens += [pad_token] * n
        self.offsets += [(0, 0)] * n
        self.word_ids += [None] * n
        self.sequence_ids += [None] * n
        self.type_ids += [0] * n
        self.special_tokens_mask += [1] * n
        self.attention_mask += [0] * n


@dataclass
class Pieces:
    """The WordPiece tokens of one text, without special tokens, kept compact for long texts.

    ``ids``, ``starts``, ``ends`` (character offsets into the text) and ``word_ids`` are
    ``(n_tokens,) int32`` arrays: 16 bytes per token, where Python lists of ints and offset
    tuples cost about 300. Windows of it become list-based :class:`Encoding` objects.
    """

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    word_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def window(self, start: int, stop: int, ids_to_tokens: dict[int, str], sequence_id: int) -> Encoding:
        """Tokens ``start:stop`` as an :class:`Encoding` whose ``sequence_ids`` are ``sequence_id``."""
        ids = self.ids[start:stop].tolist()
        offsets = list(zip(self.starts[start:stop].tolist(), self.ends[start:stop].tolist()))
        return Encoding(ids, [ids_to_tokens[i] for i in ids], offsets, self.word_ids[start:stop].tolist(),
                        [sequence_id] * len(ids))


def _int32(values: array, n: int) -> np.ndarray:
    return np.frombuffer(values, dtype=np.int32)[:n].copy() if n else np.zeros(0, np.int32)


class BatchEncoding(dict):
    """A dict of ``(batch, seq_len)`` int64 NumPy arrays plus the per-row ``Encoding`` objects.

    Keys as ``BertTokenizerFast(..., return_tensors="np")``: ``input_ids``, ``token_type_ids``,
    ``attention_mask`` and on request ``offset_mapping`` ``(batch, seq_len, 2)``,
    ``special_tokens_mask``, ``overflow_to_sample_mapping`` ``(batch,)``.
    """

    def __init__(self, data: dict, encodings: list[Encoding]):
        super().__init__(data)
        self.encodings = encodings

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Word index of each token of row ``batch_index`` (None for special/padding tokens)."""
        return list(self.encodings[batch_index].word_ids)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0/1 for tokens of the first/second text of row ``batch_index``, None otherwise."""
        return list(self.encodings[batch_index].sequence_ids)

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The WordPiece strings of row ``batch_index`` (continuations keep their ``##``)."""
        return list(self.encodings[batch_index].tokens)


class Tokenizer:
    """BERT WordPiece tokenizer (uncased, cased and multilingual vocabularies).

    Args:
        vocab_file: path to ``vocab.txt`` (one token per line; the line number is the id).
        do_lower_case: lowercase the text (and strip accents unless ``strip_accents`` says otherwise).
        strip_accents: None follows ``do_lower_case``, as in Transformers.
        tokenize_chinese_chars: isolate each CJK ideograph as its own word.
        model_max_length: the default ``max_length`` for truncation and ``padding="max_length"``.
        max_input_chars_per_word: longer words become one unknown token (100, as BERT).

    Raises:
        FileNotFoundError: ``vocab_file`` does not exist.
        ValueError: a special token is missing from the vocabulary.
    """

    def __init__(self, vocab_file: str | Path, do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, model_max_length: int = 512,
                 unk_token: str = "[UNK]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                 cls_token: str = "[CLS]", mask_token: str = "[MASK]", max_input_chars_per_word: int = 100):
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {vocab_file}")
        tokens = _read_vocab(vocab_file)
        self.vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            self.vocab.setdefault(tok, i)
        self.ids_to_tokens = dict(enumerate(tokens))
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self.max_input_chars_per_word = max_input_chars_per_word
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        for name in SPECIAL_TOKEN_KEYS:
            if getattr(self, name) not in self.vocab:
                raise ValueError(f"{name} {getattr(self, name)!r} is not in {vocab_file}")
        self.special_tokens = [unk_token, sep_token, pad_token, cls_token, mask_token]
        self.all_special_ids = sorted({self.vocab[t] for t in self.special_tokens})
        self.unk_token_id, self.sep_token_id = self.vocab[unk_token], self.vocab[sep_token]
        self.pad_token_id, self.cls_token_id = self.vocab[pad_token], self.vocab[cls_token]
        self.mask_token_id = self.vocab[mask_token]
        longest_first = sorted(set(self.special_tokens), key=len, reverse=True)
        self._special_re = re.compile("|".join(re.escape(t) for t in longest_first))
        self._char_map: dict[str, str] = {}
        self._reorder_cache: dict[str, bool] = {}
        self._word_cache: dict[str, list[tuple[int, int, int]]] = {}
        self._words = _word_pattern(tokenize_chinese_chars)

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> "Tokenizer":
        """Build from a directory with ``vocab.txt`` and optionally ``tokenizer_config.json``.

        Reads ``do_lower_case``, ``strip_accents``, ``tokenize_chinese_chars``, ``model_max_length``
        and the special tokens from the config; keyword ``overrides`` win over the file.
        Raises ``FileNotFoundError`` when the directory or its ``vocab.txt`` is missing, and
        ``ValueError`` naming the file when ``tokenizer_config.json`` is not a JSON object of the
        right field types or ``vocab.txt`` is not UTF-8 text.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        kwargs: dict = {}
        config_file = path / "tokenizer_config.json"
        if config_file.is_file():
            config = read_json(config_file)
            if not isinstance(config, dict):
                raise ValueError(f"{config_file} holds a JSON {type(config).__name__}, expected an object of fields")
            for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", *SPECIAL_TOKEN_KEYS):
                value = config.get(key)
                if isinstance(value, dict):  # serialized AddedToken
                    value = value.get("content")
                expected = str if key in SPECIAL_TOKEN_KEYS else bool
                if value is not None and not isinstance(value, expected):
                    raise ValueError(f"{config_file}: field {key!r} must be a {expected.__name__}, got {value!r}")
                if value is not None or key == "strip_accents":
                    kwargs[key] = value
            max_len = config.get("model_max_length")
            if isinstance(max_len, int) and not isinstance(max_len, bool) and 0 < max_len < 1_000_000:
                kwargs["model_max_length"] = max_len
        kwargs.update(overrides)
        return cls(path / "vocab.txt", **kwargs)

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.ids_to_tokens)

    # ---- normalization -------------------------------------------------------------------------

    def _normalize_char(self, ch: str) -> str:
        """What one original character becomes: '' (removed), itself, or several characters."""
        out = self._char_map.get(ch)
        if out is None:
            out = _clean_char(ch)
            if out == ch:
                if self.strip_accents:
                    out = "".join(c for c in unicodedata.normalize("NFD", out) if unicodedata.category(c) != "Mn")
                if self.do_lower_case:
                    out = "".join(c.lower() for c in out)
            self._char_map[ch] = out
        return out

    def _normalize(self, text: str) -> tuple[str, array | None]:
        """Normalized text and, unless it is char-for-char, the original index of each char."""
        chars = set(text)
        char_map = [self._normalize_char(c) for c in chars]
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
            for k, d in enumerate(unicodedata.normalize("NFD", _clean_char(c))):
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
            low = ch.lower() if self.do_lower_case else ch
            pieces.append(low)
            align.extend([position] * len(low))
        return "".join(pieces), align

    class _TranslateTable(dict):
        def __init__(self, char_map: dict[str, str]):
            super().__init__()
            self.char_map = char_map

        def __missing__(self, cp: int) -> str:
            return self.char_map[chr(cp)]

    # ---- WordPiece -----------------------------------------------------------------------------

    def _wordpiece(self, word: str) -> list[tuple[int, int, int]]:
        """``(id, start, end)`` pieces of one pre-tokenized word, ends in word characters."""
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_input_chars_per_word:
            pieces = [(self.unk_token_id, 0, len(word))]
        else:
            pieces, start, vocab = [], 0, self.vocab
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in vocab:
                        pieces.append((vocab[piece], start, end))
                        break
                    end -= 1
                else:
                    pieces = [(self.unk_token_id, 0, len(word))]
                    break
                start = end
        if len(self._word_cache) < 200_000:
            self._word_cache[word] = pieces
        return pieces

    def _segments(self, text: str):
        """``(start, end, special_id)``: runs of ordinary text (special_id None) and the special
        tokens written in ``text``, in order."""
        cursor = 0
        for m in self._special_re.finditer(text):
            yield cursor, m.start(), None
            yield m.start(), m.end(), self.vocab[m.group()]
            cursor = m.end()
        yield cursor, len(text), None

    def pieces(self, text: str, max_tokens: int | None = None) -> Pieces:
        """The WordPiece tokens of ``text`` without special tokens, as compact arrays.

        With ``max_tokens`` tokenizing stops once that many tokens are found (what a truncating
        caller keeps), so a 10 MB text costs no more than its first window. Memory: the normalized
        text plus 16 bytes per token (and 4 bytes per character when normalization changes lengths).
        Raises ``ValueError`` when ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        ids, starts, ends, words = array("i"), array("i"), array("i"), array("i")
        word = 0
        for seg_start, seg_end, special_id in self._segments(text):
            if max_tokens is not None and len(ids) >= max_tokens:
                break
            if special_id is not None:
                ids.append(special_id)
                starts.append(seg_start)
                ends.append(seg_end)
                words.append(word)
                word += 1
                continue
            if seg_start == seg_end:
                continue
            normalized, align = self._normalize(text[seg_start:seg_end])
            for m in self._words.finditer(normalized):
                s0 = m.start()
                for piece_id, s, e in self._wordpiece(m.group()):
                    ids.append(piece_id)
                    if align is None:
                        starts.append(seg_start + s0 + s)
                        ends.append(seg_start + s0 + e)
                    else:
                        starts.append(seg_start + align[s0 + s])
                        ends.append(seg_start + align[s0 + e - 1] + 1)
                    words.append(word)
                word += 1
                if max_tokens is not None and len(ids) >= max_tokens:
                    break
        n = len(ids) if max_tokens is None else min(len(ids), max_tokens)
        return Pieces(_int32(ids, n), _int32(starts, n), _int32(ends, n), _int32(words, n))

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoding:
        """One text as an :class:`Encoding` (ids, tokens, offsets, word ids), without truncation;
        ``add_special_tokens`` wraps it in ``[CLS] ... [SEP]``. Raises ``ValueError`` for a non-str."""
        pieces = self.pieces(text)
        enc = pieces.window(0, len(pieces), self.ids_to_tokens, 0)
        return self._add_special_tokens(enc, None) if add_special_tokens else enc

    def is_empty(self, text: str) -> bool:
        """True when ``text`` gives no token at all: nothing is left after normalization (it held
        only whitespace, control or format characters such as ``\\x00`` or ``\\u200b``, or
        accents that are stripped). Such a text encodes as ``[CLS] [SEP]``."""
        return not self.pieces(text, max_tokens=1).ids.size

    def tokenize(self, text: str) -> list[str]:
        """WordPiece strings of ``text`` without special tokens, e.g. ``["un", "##aff", "##able"]``."""
        return self.encode(text).tokens

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Vocabulary id of each token; unknown strings map to the unknown token's id."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        """Token string of each id. Raises ``ValueError`` for an id outside the vocabulary."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        return [self._id_to_token(int(i)) for i in ids]

    def _id_to_token(self, i: int) -> str:
        if i not in self.ids_to_tokens:
            raise ValueError(f"token id {i} is outside the vocabulary (size {len(self)})")
        return self.ids_to_tokens[i]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join WordPiece strings: ``##`` pieces glued to the previous token, others spaced.

        Matches the fast tokenizer's WordPiece decoder (with its per-token cleanup).
        """
        out = []
        for k, tok in enumerate(tokens):
            if k > 0:
                tok = tok[2:] if tok.startswith("##") else " " + tok
            out.append(_cleanup(tok))
        return "".join(out)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of a sequence of ids, as ``BertTokenizerFast.decode`` (WordPiece decoder, then
        Transformers' ``clean_up_tokenization``). Raises ``ValueError`` for an id outside the vocabulary."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.all_special_ids]
        return _cleanup(self.convert_tokens_to_string(self.convert_ids_to_tokens(ids)))

    # ---- encoding with special tokens, truncation, padding ----------------------------------

    def encode_batch(self, pairs: list[tuple[str, str | None]], *, truncation: str = "do_not_truncate",
                     max_length: int | None = None, stride: int = 0, overflow: bool = True) -> list[Encoding]:
        """Encode ``(text, text_pair or None)`` pairs.

        With ``overflow`` (the default) every truncation window is returned, in Transformers'
        order; with ``overflow=False`` exactly one ``Encoding`` per pair (the first window), and a
        lone text is tokenized only as far as that window reaches. Each ``Encoding`` has
        ``overflow_to_sample`` set to the index of its pair and ``truncated`` set when tokens of
        the pair are not in it. Raises ``ValueError`` as ``__call__`` does, and for a negative stride.
        """
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"unknown truncation strategy {truncation!r}; use one of {TRUNCATION_STRATEGIES}")
        if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 0:
            raise ValueError(f"stride must be an integer >= 0, got {stride!r}")
        truncate = truncation != "do_not_truncate" and max_length is not None
        out = []
        for sample, (text, pair) in enumerate(pairs):
            # one window of a lone text never holds more than max_length - 2 tokens: stop one after
            cap = max(max_length - 1, 0) if truncate and not overflow and pair is None else None
            first = self.pieces(text, cap)
            second = self.pieces(pair) if pair is not None else None
            n_b = len(second) if second is not None else None
            spans = self._truncate(len(first), n_b, truncation, max_length, stride) if truncate \
                else [((0, len(first)), None if n_b is None else (0, n_b))]
            whole = len(first) + (n_b or 0)
            for a_span, b_span in spans[:None if overflow else 1]:
                a = first.window(*a_span, self.ids_to_tokens, 0)
                b = second.window(*b_span, self.ids_to_tokens, 1) if second is not None else None
                enc = self._add_special_tokens(a, b)
                enc.overflow_to_sample = sample
                enc.truncated = len(a) + (len(b) if b is not None else 0) < whole
                out.append(enc)
        return out

    @staticmethod
    def _truncate(n_a: int, n_b: int | None, strategy: str, max_length: int,
                  stride: int) -> list[tuple[tuple[int, int], tuple[int, int] | None]]:
        """Token spans ``((a_start, a_stop), (b_start, b_stop) or None)`` of each window of a text
        of ``n_a`` tokens and an optional pair of ``n_b`` tokens."""
        # Reference: tokenizers ``utils/truncation.rs::truncate_encodings`` and ``Encoding::merge_with``.
        has_pair = n_b is not None
        n_b = n_b or 0
        budget = max_length - (3 if has_pair else 2)
        if n_a + n_b <= budget:
            return [((0, n_a), (0, n_b) if has_pair else None)]
        if budget < 0:
            raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
        if strategy == "longest_first":
            if not has_pair:
                len_a, len_b = budget, 0
            else:
                short, long_ = sorted((n_a, n_b))
                long_ = short if short > budget else max(short, budget - short)
                if short + long_ > budget:
                    short, long_ = budget // 2, budget // 2 + budget % 2
                len_a, len_b = (long_, short) if n_a > n_b else (short, long_)
        else:
            target = n_a if strategy == "only_first" else n_b
            if strategy == "only_second" and not has_pair:
                raise ValueError("truncation='only_second' needs a second text (text_pair)")
            to_remove = n_a + n_b - budget
            if target <= to_remove:
                which = "first" if strategy == "only_first" else "second"
                raise ValueError(
                    f"truncation={strategy!r} cannot fit max_length={max_length}: the {which} text has "
                    f"{target} tokens but {to_remove} must be removed; the other text is too long "
                    f"(use a larger max_length or truncation='longest_first')")
            len_a = n_a - to_remove if strategy == "only_first" else n_a
            len_b = n_b - to_remove if strategy == "only_second" else n_b
        parts_a = _windows(n_a, len_a, stride)
        parts_b = _windows(n_b, len_b, stride) if has_pair else [None]
        out = [(parts_a[0], parts_b[0])]
        for a in parts_a[1:]:
            out += [(a, b) for b in parts_b]
        out += [(parts_a[0], b) for b in parts_b[1:]]
        return out

    def _add_special_tokens(self, a: Encoding, b: Encoding | None) -> Encoding:
        cls_, sep = self.cls_token_id, self.sep_token_id
        ids = [cls_] + a.ids + [sep]
        tokens = [self.cls_token] + a.tokens + [self.sep_token]
        offsets = [(0, 0)] + a.offsets + [(0, 0)]
        word_ids = [None] + a.word_ids + [None]
        seq_ids = [None] + [0] * len(a) + [None]
        type_ids = [0] * (len(a) + 2)
        special = [1] + [0] * len(a) + [1]
        if b is not None:
            ids += b.ids + [sep]
            tokens += b.tokens + [self.sep_token]
            offsets += b.offsets + [(0, 0)]
            word_ids += b.word_ids + [None]
            seq_ids += [1] * len(b) + [None]
            type_ids += [1] * (len(b) + 1)
            special += [0] * len(b) + [1]
        return Encoding(ids, tokens, offsets, word_ids, seq_ids, type_ids, special, [1] * len(ids))

    def __call__(self, text, text_pair=None, *, truncation: bool | str = False, max_length: int | None = None,
                 padding: bool | str = False, stride: int = 0, return_overflowing_tokens: bool = False,
                 return_offsets_mapping: bool = False, return_special_tokens_mask: bool = False) -> BatchEncoding:
        """Encode a text, a pair, or a batch of texts/pairs into ``(batch, seq_len)`` int64 arrays.

        Args:
            text: a str, a list of str, or a list of ``(text, text_pair)`` tuples.
            text_pair: a str (with a str ``text``) or a list of str (with a list ``text``).
            truncation: True/``"longest_first"``, ``"only_first"``, ``"only_second"`` or False.
            max_length: total length with special tokens; defaults to ``model_max_length``.
            padding: True/``"longest"``, ``"max_length"`` or False.
            stride: tokens shared by consecutive overflowing windows.
            return_overflowing_tokens: return every window, and ``overflow_to_sample_mapping``.

        Returns a ``BatchEncoding`` with the keys and values of
        ``BertTokenizerFast(..., return_tensors="np")``.

        Raises:
            ValueError: text is not a str (or list of them); unknown strategy; rows of different
                lengths without padding; stride not smaller than the room left by truncation;
                a pair whose truncated text cannot be shortened enough.
        """
        pairs = _as_pairs(text, text_pair)
        strategy = _truncation_strategy(truncation)
        pad = _padding_strategy(padding)
        if max_length is None and (strategy != "do_not_truncate" or pad == "max_length"):
            max_length = self.model_max_length
        encodings = self.encode_batch(pairs, truncation=strategy, max_length=max_length, stride=stride,
                                      overflow=return_overflowing_tokens)
        width = max(len(e) for e in encodings)
        if pad == "max_length":
            width = max(width, max_length)
        if pad != "do_not_pad":
            for enc in encodings:
                enc.pad(width, self.pad_token_id, self.pad_token)
        elif len({len(e) for e in encodings}) > 1:
            raise ValueError("the encoded texts have different lengths; pass padding=True (or 'max_length') "
                             "to get arrays")
        data = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        if return_special_tokens_mask:
            data["special_tokens_mask"] = np.array([e.special_tokens_mask for e in encodings], dtype=np.int64)
        if return_offsets_mapping:
            data["offset_mapping"] = np.array([e.offsets for e in encodings], dtype=np.int64).reshape(
                len(encodings), width, 2)
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = np.array([e.overflow_to_sample for e in encodings], dtype=np.int64)
        return BatchEncoding(data, encodings)


def _read_vocab(file: Path) -> list[str]:
    """Tokens of a ``vocab.txt``, one per line. Raises ``ValueError`` naming the file and line when
    it is not UTF-8 text (a binary file, say)."""
    tokens = []
    with open(file, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                tokens.append(raw.decode("utf-8").rstrip("\n"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{file} line {n} is not UTF-8 text (byte {e.start}: 0x{raw[e.start]:02x}); "
                                 f"a vocab.txt holds one token per line") from None
    return tokens


def _windows(n: int, max_len: int, stride: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of windows of ``max_len`` of ``n`` tokens, each ``max_len - stride`` after the last."""
    if n <= max_len:
        return [(0, n)]
    if max_len == 0:
        return [(0, 0), (0, n)]
    if stride >= max_len:
        raise ValueError(f"stride={stride} must be smaller than the {max_len} tokens left for the truncated "
                         f"text after the other text and special tokens")
    parts = []
    for start in range(0, n, max_len - stride):
        stop = min(start + max_len, n)
        parts.append((start, stop))
        if stop == n:
            break
    return parts


def _cleanup(text: str) -> str:
    # Reference: transformers ``PreTrainedTokenizerBase.clean_up_tokenization``.
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


def _as_pairs(text, text_pair) -> list[tuple[str, str | None]]:
    if isinstance(text, str):
        if text_pair is not None and not isinstance(text_pair, str):
            raise ValueError(f"text_pair must be a str when text is a str, got {type(text_pair).__name__}")
        # As Transformers: an empty text_pair beside a single text means no pair at all.
        return [(text, text_pair or None)]
    if not isinstance(text, (list, tuple)):
        raise ValueError(f"text must be a str or a list of str, got {type(text).__name__}")
    if text_pair is not None:
        if isinstance(text_pair, str) or len(text_pair) != len(text):
            raise ValueError("text_pair must be a list of str as long as text")
        return list(zip(text, text_pair))
    return [tuple(t) if isinstance(t, (list, tuple)) else (t, None) for t in text]


def _truncation_strategy(truncation) -> str:
    if truncation is True:
        return "longest_first"
    if truncation is False or truncation is None:
        return "do_not_truncate"
    if truncation not in TRUNCATION_STRATEGIES:
        raise ValueError(f"unknown truncation strategy {truncation!r}; use one of {TRUNCATION_STRATEGIES}")
    return truncation


def _padding_strategy(padding) -> str:
    if padding is True:
        return "longest"
    if padding is False or padding is None:
        return "do_not_pad"
    if padding not in PADDING_STRATEGIES:
        raise ValueError(f"unknown padding strategy {padding!r}; use one of {PADDING_STRATEGIES}")
    return padding
