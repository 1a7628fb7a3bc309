"""Token embeddings of BERT and DistilBERT: word + position (+ token type), then layer norm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from npformer.config import Config
from npformer.quantization import read_matrix
from npformer.weights import Weights

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
EMBEDDING_FIELDS = {
    WORD_EMBEDDINGS: "word",
    "embeddings.position_embeddings.weight": "position",
    "embeddings.token_type_embeddings.weight": "token_type",
    "embeddings.LayerNorm.weight": "ln_g",
    "embeddings.LayerNorm.bias": "ln_b",
}


@dataclass
class Embeddings:
    """Token embeddings of BERT (word + position + token type) and DistilBERT (no token types),
    then layer norm: ``E = LayerNorm(W_word[input_ids] + W_pos[0..S) (+ W_type[token_type_ids]))``."""

    word: np.ndarray  # (vocab_size, width) float32, or an int8 QuantizedTensor; width: hidden or embedding_size
    position: np.ndarray | None  # (max_position_embeddings, width); None without a position table (rotary)
    token_type: np.ndarray | None  # (type_vocab_size, width); None for DistilBERT
    ln_g: np.ndarray  # (width,) layer norm scale
    ln_b: np.ndarray  # (width,) layer norm shift

    @classmethod
    def load(cls, weights: Weights, config: Config, token_types: bool, width: int | None = None) -> "Embeddings":
        """Read the tables, ``width`` wide (default ``hidden_size``; ELECTRA's and ALBERT's
        ``embedding_size``). Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor."""
        c, h = config, width or config.hidden_size
        return cls(
            word=read_matrix(weights, WORD_EMBEDDINGS, (c.vocab_size, h)),
            position=weights.get("embeddings.position_embeddings.weight", (c.max_position_embeddings, h)),
            token_type=weights.get("embeddings.token_type_embeddings.weight", (c.type_vocab_size, h)) if token_types else None,
            ln_g=weights.get("embeddings.LayerNorm.weight", (h,)),
            ln_b=weights.get("embeddings.LayerNorm.bias", (h,)),
        )

    def __call__(
        self,
        input_ids: np.ndarray,
        token_type_ids: np.ndarray,
        eps: float,  # noqa: PLR0913
        layer_norm: Callable,
        position_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(batch, seq)`` ids -> ``(batch, seq, width)`` float32, normalized by the backend's
        ``layer_norm(x, gamma, beta, eps)``; ``position_ids`` ``(batch, seq)`` (default ``0 .. seq - 1``)."""
        batch, seq = input_ids.shape
        word = self.word[input_ids] if isinstance(self.word, np.ndarray) else self.word.rows(input_ids)
        x = (
            word
            if self.position is None
            else word + (self.position[:seq] if position_ids is None else self.position[position_ids])
        )  # [B, S, H]
        if self.token_type is not None:
            x = x + self.token_type[token_type_ids]
        return layer_norm(x.reshape(batch * seq, -1), self.ln_g, self.ln_b, eps).reshape(batch, seq, -1)
