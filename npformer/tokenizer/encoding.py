"""Encodings and what happens to them after WordPiece: special tokens' places, truncation with
overflowing stride windows, and padding (each once).

Reference: Hugging Face tokenizers ``tokenizer/encoding.rs`` and ``utils/truncation.rs``
(``truncate_encodings``, ``Encoding::merge_with``), as ``BertTokenizerFast`` runs them.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field, replace

import numpy as np

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_SIDES = ("right", "left")


class Offsets:
    """The ``(start, end)`` character offsets of an encoding's tokens: a read-only sequence of
    tuples, as ``tokenizers.Encoding.offsets`` is a list of them, kept as two ``array("i")``
    columns, so that no tuple per token is made (nor tracked by the garbage collector) until one
    is read. ``pending`` holds edits still to make, in order, when the offsets are first read:
    callables ``edit(starts, ends)`` changing two arrays in place (the byte-level post-processor's
    trimming, which a classification never reads); they run on copies, which then replace the
    columns in one assignment, so threads reading at once all see the same values. Compares equal
    to any sequence of the same pairs; ``+`` concatenates (with a list of pairs too); NumPy reads it
    as ``(n, 2)``.
    """

    __slots__ = ("_state",)

    def __init__(self, starts: array, ends: array, pending: tuple = ()):
        self._state = (starts, ends, pending)

    @classmethod
    def of(cls, values) -> "Offsets":
        """``values`` itself when an :class:`Offsets`, else one made of its ``(start, end)`` pairs."""
        if isinstance(values, Offsets):
            return values
        values = list(values)
        return cls(array("i", [a for a, _ in values]), array("i", [b for _, b in values]))

    def _columns(self) -> tuple[array, array]:
        starts, ends, pending = self._state
        if pending:
            starts, ends = array("i", starts), array("i", ends)
            for edit in pending:
                edit(starts, ends)
            self._state = (starts, ends, ())
        return starts, ends

    @property
    def starts(self) -> array:
        """Each token's start, ``(n,)`` int32 (``array("i")``; do not change it)."""
        return self._columns()[0]

    @property
    def ends(self) -> array:
        """Each token's end (one past its last character), as :attr:`starts`."""
        return self._columns()[1]

    def __len__(self) -> int:
        return len(self._state[0])

    def __getitem__(self, i):
        starts, ends = self._columns()
        return Offsets(starts[i], ends[i]) if isinstance(i, slice) else (starts[i], ends[i])

    def __iter__(self):
        return zip(*self._columns())

    def __eq__(self, other) -> bool:
        try:
            return list(self) == list(other)
        except TypeError:
            return NotImplemented

    __hash__ = None

    def __add__(self, other) -> "Offsets":
        (starts, ends), (more_starts, more_ends) = self._columns(), Offsets.of(other)._columns()
        return Offsets(starts + more_starts, ends + more_ends)

    def __radd__(self, other) -> "Offsets":
        return Offsets.of(other) + self

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty((len(self), 2), np.int64)
        out[:, 0], out[:, 1] = self._columns()
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return repr(list(self))


@dataclass
class Encoding:
    """One encoded sequence (or one overflow window), as ``tokenizers.Encoding``.

    All lists have the same length ``seq_len``. ``offsets`` are ``(start, end)`` character offsets
    into the original text of the sequence each token came from, ``(0, 0)`` for special tokens (an
    :class:`Offsets`, read as a list of tuples, or a list).
    ``word_ids`` index the pre-tokenized words of that sequence (None for special tokens);
    ``sequence_ids`` are 0 (first text), 1 (second text) or None (special tokens).
    ``truncated`` is True when tokens of the input(s) are not in this window (truncation cut them
    or they are in other overflow windows).
    """

    ids: list[int]
    tokens: list[str]
    offsets: Offsets | list[tuple[int, int]]
    word_ids: list[int | None]
    sequence_ids: list[int | None]
    type_ids: list[int] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)
    attention_mask: list[int] = field(default_factory=list)
    overflow_to_sample: int = 0
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Pieces:
    """The tokens of one text, without special tokens, kept compact for long texts.

    ``ids``, ``starts``, ``ends`` (character offsets into the text) and ``word_ids`` are ``array("i")``
    columns of ``n_tokens`` int32 each (the buffers the tokenizer appended them to, read by NumPy
    through the buffer protocol): 16 bytes per token, where Python lists of ints and offset tuples
    cost about 300. Windows of it become list-based :class:`Encoding` objects.
    """

    ids: array
    starts: array
    ends: array
    word_ids: array
    texts: dict[int, str] = field(default_factory=dict)  # position -> token string, where not the vocabulary's

    def __len__(self) -> int:
        return len(self.ids)

    def window(self, start: int, stop: int, ids_to_tokens: dict[int, str], sequence_id: int) -> Encoding:
        """Tokens ``start:stop`` as an :class:`Encoding` whose ``sequence_ids`` are ``sequence_id``."""
        ids, starts, ends, word_ids = self.ids, self.starts, self.ends, self.word_ids
        if start != 0 or stop != len(ids):
            ids, starts, ends, word_ids = ids[start:stop], starts[start:stop], ends[start:stop], word_ids[start:stop]
        ids, word_ids = ids.tolist(), word_ids.tolist()
        tokens = list(map(ids_to_tokens.__getitem__, ids))
        for k, text in self.texts.items():
            if start <= k < stop:
                tokens[k - start] = text
        return Encoding(ids, tokens, Offsets(starts, ends), word_ids, [sequence_id] * len(ids))


def pad_encoding(enc: Encoding, width: int, pad_id: int, pad_token: str) -> Encoding:
    """``enc`` with padding tokens appended up to ``width`` tokens (attention 0, type id 0, special
    mask 1, offsets ``(0, 0)``, no word): a result that must cover the padding, as Transformers'
    ``padding="max_length"`` gives. ``enc`` itself is returned when it is not shorter."""
    n = width - len(enc)
    if n <= 0:
        return enc
    return replace(
        enc,
        ids=enc.ids + [pad_id] * n,
        tokens=enc.tokens + [pad_token] * n,
        offsets=enc.offsets + [(0, 0)] * n,
        word_ids=enc.word_ids + [None] * n,
        sequence_ids=enc.sequence_ids + [None] * n,
        type_ids=enc.type_ids + [0] * n,
        special_tokens_mask=enc.special_tokens_mask + [1] * n,
        attention_mask=enc.attention_mask + [0] * n,
    )


class BatchEncoding(dict):
    """A dict of ``(batch, seq_len)`` int64 NumPy arrays plus the per-row ``Encoding`` objects.

    Keys as ``BertTokenizerFast(..., return_tensors="np")``: ``input_ids``, ``token_type_ids``,
    ``attention_mask`` and on request ``offset_mapping`` ``(batch, seq_len, 2)``,
    ``special_tokens_mask``, ``overflow_to_sample_mapping`` ``(batch,)``. The per-row views below
    cover the padding too (None / the pad token), as Transformers' do.
    """

    def __init__(self, data: dict, encodings: list[Encoding], pad_token: str = "[PAD]"):
        super().__init__(data)
        self.encodings = encodings
        self.pad_token = pad_token

    def _padding(self, batch_index: int) -> int:
        return self["input_ids"].shape[1] - len(self.encodings[batch_index])

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Word index of each token of row ``batch_index`` (None for special/padding tokens)."""
        return list(self.encodings[batch_index].word_ids) + [None] * self._padding(batch_index)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0/1 for tokens of the first/second text of row ``batch_index``, None otherwise."""
        return list(self.encodings[batch_index].sequence_ids) + [None] * self._padding(batch_index)

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The WordPiece strings of row ``batch_index`` (continuations keep their ``##``)."""
        return list(self.encodings[batch_index].tokens) + [self.pad_token] * self._padding(batch_index)


def pad(
    encodings: list[Encoding],
    pad_id: int,
    width: int | None = None,
    keys: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids"),
) -> dict[str, np.ndarray]:
    """The one padding routine: ``encodings`` right-padded to ``width`` (default: the longest) as
    ``(batch, width) int64`` arrays under Transformers' names (``offset_mapping`` is
    ``(batch, width, 2)``). Padding: ``pad_id``, attention 0, token type 0, special mask 1,
    offsets ``(0, 0)``. The encodings are not changed."""
    width = max(len(e) for e in encodings) if width is None else width
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "offset_mapping": 0}
    field_of = {
        "input_ids": "ids",
        "attention_mask": "attention_mask",
        "token_type_ids": "type_ids",
        "special_tokens_mask": "special_tokens_mask",
        "offset_mapping": "offsets",
    }
    out = {}
    for key in keys:
        shape = (len(encodings), width, 2) if key == "offset_mapping" else (len(encodings), width)
        arr = np.full(shape, fill[key], dtype=np.int64)
        for row, enc in enumerate(encodings):
            values = getattr(enc, field_of[key])
            if values:
                arr[row, : len(enc)] = values
        out[key] = arr
    return out


def _strategy(value, names: tuple[str, ...], what: str) -> str:
    """Transformers' spelling of a strategy: True -> ``names[0]``, False / None -> ``names[-1]``, or a name."""
    if value is True or value is False or value is None:
        return names[0] if value else names[-1]
    if value not in names:
        raise ValueError(f"unknown {what} strategy {value!r}; use one of {names}")
    return value


def truncation_strategy(truncation) -> str:
    """The one truncation check: True / a strategy name / False -> a name of :data:`TRUNCATION_STRATEGIES`."""
    return _strategy(truncation, TRUNCATION_STRATEGIES, "truncation")


def truncation_side(side) -> str:
    """``"right"`` or ``"left"`` (also TEI's ``"Right"`` / ``"Left"``); raises ``ValueError`` otherwise."""
    value = side.lower() if isinstance(side, str) else side
    if value not in TRUNCATION_SIDES:
        raise ValueError(f"truncation side must be 'right' or 'left', got {side!r}")
    return value


def padding_strategy(padding) -> str:
    """True / a strategy name / False -> a name of :data:`PADDING_STRATEGIES`."""
    return _strategy(padding, PADDING_STRATEGIES, "padding")


def truncate(
    n_a: int,
    n_b: int | None,
    strategy: str,
    max_length: int,
    stride: int,  # noqa: PLR0913
    added: int | None = None,
    side: str = "right",
) -> list[tuple[tuple[int, int], tuple[int, int] | None]]:
    """Token spans ``((a_start, a_stop), (b_start, b_stop) or None)`` of each window of a text
    of ``n_a`` tokens and an optional pair of ``n_b`` tokens, leaving room for the ``added`` special
    tokens (the post-processor's count; BERT's 2, or 3 for a pair, by default). ``side`` is
    where tokens are cut: ``"right"`` keeps the start of each text, ``"left"`` its end
    (Transformers' ``truncation_side``)."""
    # Reference: tokenizers ``utils/truncation.rs::truncate_encodings`` and ``Encoding::merge_with``.
    has_pair = n_b is not None
    n_b = n_b or 0
    budget = max_length - (added if added is not None else 3 if has_pair else 2)
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
                f"(use a larger max_length or truncation='longest_first')"
            )
        len_a = n_a - to_remove if strategy == "only_first" else n_a
        len_b = n_b - to_remove if strategy == "only_second" else n_b
    parts_a = windows(n_a, len_a, stride, side)
    parts_b = windows(n_b, len_b, stride, side) if has_pair else [None]
    out = [(parts_a[0], parts_b[0])]
    for a in parts_a[1:]:
        out += [(a, b) for b in parts_b]
    out += [(parts_a[0], b) for b in parts_b[1:]]
    return out


def windows(n: int, max_len: int, stride: int, side: str = "right") -> list[tuple[int, int]]:
    """``(start, stop)`` of windows of ``max_len`` of ``n`` tokens, each ``max_len - stride`` after
    the last; with ``side="left"`` from the end backwards (the first window holds the last tokens)."""
    if n <= max_len:
        return [(0, n)]
    if max_len == 0:
        return [(0, 0), (0, n)]
    if stride >= max_len:
        raise ValueError(
            f"stride={stride} must be smaller than the {max_len} tokens left for the truncated "
            f"text after the other text and special tokens"
        )
    parts = []
    if side == "left":
        for stop in range(n, 0, -(max_len - stride)):
            parts.append((max(stop - max_len, 0), stop))
            if stop <= max_len:
                break
        return parts
    for start in range(0, n, max_len - stride):
        stop = min(start + max_len, n)
        parts.append((start, stop))
        if stop == n:
            break
    return parts


def as_pairs(text, text_pair) -> list[tuple[str, str | None]]:
    """A tokenizer call's ``text`` / ``text_pair`` as ``(text, text_pair or None)`` pairs. Raises
    ``ValueError`` for mismatched or non-str inputs."""
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
