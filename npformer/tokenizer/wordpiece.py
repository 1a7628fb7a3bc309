"""WordPiece (Schuster & Nakajima 2012, as BERT's ``WordpieceTokenizer`` and Hugging Face tokenizers'
``models/wordpiece``): greedy longest-match-first over one pre-tokenized word, ``##`` marking
continuations; a word that cannot be covered, or is longer than ``max_input_chars_per_word``,
becomes one unknown token. Also the decoder that joins pieces back into text.
"""

from __future__ import annotations

CACHE_WORDS = 200_000  # words whose pieces are remembered (texts repeat words)


class WordPiece:
    """``wordpiece(word)`` -> ``[(id, start, end), ...]``, each piece's characters in ``word``.

    Args:
        vocab: token -> id (``vocab.txt``, the line number is the id).
        unk_token_id: the id a word that cannot be covered becomes.
        max_input_chars_per_word: longer words become one unknown token (100, as BERT).
    """

    continuing_subword_prefix = "##"
    unk_token: str | None = None  # its string, when read from tokenizer.json

    def __init__(self, vocab: dict[str, int], unk_token_id: int, max_input_chars_per_word: int = 100):
        self.vocab = vocab
        self.unk_token_id = unk_token_id
        self.max_input_chars_per_word = max_input_chars_per_word
        self._cache: dict[str, tuple[tuple[int, int, int], ...]] = {}

    def __call__(self, word: str) -> tuple[tuple[int, int, int], ...]:
        cached = self._cache.get(word)
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
        pieces = tuple(pieces)  # of tuples of ints, which the garbage collector stops tracking
        if len(self._cache) < CACHE_WORDS:
            self._cache[word] = pieces
        return pieces


def tokens_to_string(tokens: list[str]) -> str:
    """Join WordPiece strings: ``##`` pieces glued to the previous token, others spaced, each piece
    cleaned up as the fast tokenizer's WordPiece decoder does."""
    out = []
    for k, tok in enumerate(tokens):
        if k > 0:
            tok = tok[2:] if tok.startswith("##") else " " + tok
        out.append(cleanup(tok))
    return "".join(out)


def cleanup(text: str) -> str:
    """Transformers' ``PreTrainedTokenizerBase.clean_up_tokenization``: no space before . ? ! , and
    English contractions."""
    for a, b in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(a, b)
    return text
