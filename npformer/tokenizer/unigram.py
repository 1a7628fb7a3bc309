"""The Unigram language model tokenizer (Kudo 2018; SentencePiece's ``unigram_model.cc`` and Hugging
Face tokenizers' ``models/unigram``): each piece has a log-probability, and a word is split into
the pieces whose scores add up to the most (Viterbi over the word's characters). A character no
piece starts with is an unknown piece scored ``min(scores) - 10``; consecutive unknowns are one
token.
"""

from __future__ import annotations

UNK_PENALTY = 10.0  # tokenizers' K_UNK_PENALTY: an unknown character costs this below the worst piece
CACHE_WORDS = 50_000  # words whose pieces are remembered


class Unigram:
    """``unigram(word)`` -> ``[(id, start, end), ...]``, each piece's characters in ``word``.

    Args:
        vocab: ``[(piece, score), ...]`` in id order (``tokenizer.json``'s ``model.vocab``; the
            score is the piece's log-probability).
        unk_id: the id of the unknown piece (None: a word with an unknown character is an error,
            as in tokenizers).
        byte_fallback: an unknown piece becomes its UTF-8 bytes' ``<0xXX>`` pieces when the
            vocabulary has all of them.

    Ties between paths of equal score go to the one found first, scanning the word left to right
    and the pieces at each position shortest first, as tokenizers' ``encode_optimized`` does.
    Raises ``ValueError`` for an ``unk_id`` outside the vocabulary, and (on a call) for an unknown
    character when there is no ``unk_id``.
    """

    continuing_subword_prefix = ""

    def __init__(self, vocab: list[tuple[str, float]], unk_id: int | None = None, byte_fallback: bool = False):
        if unk_id is not None and not 0 <= unk_id < len(vocab):
            raise ValueError(f"unk_id {unk_id} is outside the vocabulary (size {len(vocab)})")
        self.ids: dict[str, int] = {}
        for i, (piece, _) in enumerate(vocab):
            self.ids.setdefault(piece, i)
        self.scores = [float(score) for _, score in vocab]
        self.unk_id, self.byte_fallback = unk_id, byte_fallback
        self.unk_score = min(self.scores, default=0.0) - UNK_PENALTY
        self.max_piece = max((len(p) for p in self.ids), default=1)
        self.unk_token = vocab[unk_id][0] if unk_id is not None else None
        self._cache: dict[str, tuple[tuple[int, int, int], ...]] = {}

    def __call__(self, word: str) -> tuple[tuple[int, int, int], ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        pieces = self._ids(word, self._best_path(word))
        pieces = tuple(pieces)  # of tuples of ints, which the garbage collector stops tracking
        if len(self._cache) < CACHE_WORDS:
            self._cache[word] = pieces
        return pieces

    def _best_path(self, word: str) -> list[tuple[int, int, int]]:
        """``[(id, start, end), ...]`` of the best segmentation, unknown runs fused (id -1 before
        the unknown piece is looked up)."""
        n, ids, scores = len(word), self.ids, self.scores
        best = [0.0] * (n + 1)
        back: list[tuple[int, int] | None] = [None] * (n + 1)  # (start, id) of the best piece ending here
        for start in range(n):
            if start and back[start] is None:
                continue
            here = best[start]
            single = False
            for end in range(start + 1, min(n, start + self.max_piece) + 1):
                piece_id = ids.get(word[start:end])
                if piece_id is None:
                    continue
                score = here + scores[piece_id]
                if back[end] is None or score > best[end]:
                    best[end], back[end] = score, (start, piece_id)
                single = single or end == start + 1
            if not single:
                score = here + self.unk_score
                if back[start + 1] is None or score > best[start + 1]:
                    best[start + 1], back[start + 1] = score, (start, -1)
        path, end = [], n
        while end > 0:
            start, piece_id = back[end]
            if piece_id == -1 and path and path[-1][0] == -1:  # fuse with the unknown run after it
                path[-1] = (-1, start, path[-1][2])
            else:
                path.append((piece_id, start, end))
            end = start
        return path[::-1]

    def _ids(self, word: str, path: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        out = []
        for piece_id, start, end in path:
            if piece_id >= 0 and piece_id != self.unk_id:
                out.append((piece_id, start, end))
                continue
            text = word[start:end]
            known = self.ids.get(text)  # tokenizers looks every piece up by its string
            if known is not None:
                out.append((known, start, end))
                continue
            if self.byte_fallback:
                byte_ids = [self.ids.get(f"<0x{b:02X}>") for b in text.encode("utf-8")]
                if all(i is not None for i in byte_ids):
                    out.extend((i, start, end) for i in byte_ids)
                    continue
            if self.unk_id is None:
                raise ValueError(f"the Unigram vocabulary has no unknown piece for {text!r}")
            out.append((self.unk_id, start, end))
        return out
