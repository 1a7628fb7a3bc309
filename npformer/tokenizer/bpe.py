"""Byte-pair encoding (Sennrich et al. 2016; GPT-2's and RoBERTa's tokenizers), as Hugging Face
tokenizers' ``models/bpe``: a word starts as its characters and the adjacent pair with the lowest
merge rank is merged until no pair has one; each symbol is then looked up in the vocabulary.
"""

from __future__ import annotations

CACHE_WORDS = 50_000  # words whose pieces are remembered (tokenizers keeps 10,000; a miss costs more here)


class BPE:
    """``bpe(word)`` -> ``[(id, start, end), ...]``, each piece's characters in ``word``.

    Args:
        vocab: token -> id.
        merges: the merge rules ``(left, right)`` in rank order (``merges.txt``' lines).
        unk_token: the token of a character missing from the vocabulary (None: such a character
            gives no token, as in ``tokenizers``; byte-level vocabularies have every byte).
        continuing_subword_prefix: put before every symbol but a word's first (``##``-style BPE).
        end_of_word_suffix: put after a word's last symbol (``</w>``-style BPE).
        fuse_unk: consecutive unknown characters become one unknown token.
        byte_fallback: an unknown character becomes its UTF-8 bytes' ``<0xXX>`` tokens when the
            vocabulary has them (SentencePiece-style BPE).
        ignore_merges: a word found whole in the vocabulary is one token, merges or not.

    Raises ``ValueError`` for a merge whose parts or result are not in the vocabulary.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        unk_token: str | None = None,  # noqa: PLR0913
        continuing_subword_prefix: str = "",
        end_of_word_suffix: str = "",
        fuse_unk: bool = False,
        byte_fallback: bool = False,
        ignore_merges: bool = False,
    ):
        self.vocab = vocab
        self.prefix, self.suffix = continuing_subword_prefix or "", end_of_word_suffix or ""
        self.unk_token, self.fuse_unk, self.byte_fallback = unk_token, fuse_unk, byte_fallback
        self.ignore_merges = ignore_merges
        if unk_token is not None and unk_token not in vocab:
            raise ValueError(f"the unknown token {unk_token!r} is not in the vocabulary")
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, (left, right) in enumerate(merges):
            merged = left + (right[len(self.prefix) :] if self.prefix and right.startswith(self.prefix) else right)
            for part in (left, right, merged):
                if part not in vocab:
                    raise ValueError(f"merge {rank} ({left!r} {right!r}): {part!r} is not in the vocabulary")
            self.ranks.setdefault((left, right), rank)
        self._cache: dict[str, tuple[tuple[int, int, int], ...]] = {}

    @property
    def continuing_subword_prefix(self) -> str:
        """The prefix of a word's non-first pieces (``""`` for byte-level BPE), tokenizers' name."""
        return self.prefix

    def __call__(self, word: str) -> tuple[tuple[int, int, int], ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        pieces = self._tokenize(word)
        pieces = tuple(pieces)  # of tuples of ints, which the garbage collector stops tracking
        if len(self._cache) < CACHE_WORDS:
            self._cache[word] = pieces
        return pieces

    def _tokenize(self, word: str) -> list[tuple[int, int, int]]:
        vocab, prefix = self.vocab, self.prefix
        if self.ignore_merges and word + self.suffix in vocab:
            return [(vocab[word + self.suffix], 0, len(word))]
        n = len(word)
        symbols = [(prefix if k else "") + ch + (self.suffix if k == n - 1 else "") for k, ch in enumerate(word)]
        spans = [(k, k + 1) for k in range(n)]
        known = [s in vocab for s in symbols]
        ranks = self.ranks
        while len(symbols) > 1:
            best, at = None, -1
            for k in range(len(symbols) - 1):
                if known[k] and known[k + 1]:
                    rank = ranks.get((symbols[k], symbols[k + 1]))
                    if rank is not None and (best is None or rank < best):
                        best, at = rank, k
            if best is None:
                break
            right = symbols[at + 1]
            symbols[at] += right[len(prefix) :] if prefix and right.startswith(prefix) else right
            spans[at] = (spans[at][0], spans[at + 1][1])
            del symbols[at + 1], spans[at + 1], known[at + 1]
        return self._ids(symbols, spans, known)

    def _ids(self, symbols: list[str], spans: list[tuple[int, int]], known: list[bool]) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        unk_open = False
        for symbol, (start, end), ok in zip(symbols, spans, known):
            if ok:
                out.append((self.vocab[symbol], start, end))
                unk_open = False
                continue
            if self.byte_fallback:
                raw = symbol[len(self.prefix) :] if self.prefix and start and symbol.startswith(self.prefix) else symbol
                byte_tokens = [f"<0x{b:02X}>" for b in raw.encode("utf-8")]
                if all(t in self.vocab for t in byte_tokens):
                    out.extend((self.vocab[t], start, end) for t in byte_tokens)
                    unk_open = False
                    continue
            if self.unk_token is None:  # as tokenizers: without an unknown token the symbol gives no token
                continue
            if self.fuse_unk and unk_open:
                out[-1] = (out[-1][0], out[-1][1], end)
            else:
                out.append((self.vocab[self.unk_token], start, end))
            unk_open = True
        return out
