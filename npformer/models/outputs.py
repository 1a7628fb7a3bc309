"""What models return: Transformers' ``ModelOutput`` access on dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


class OutputAccess:
    """Transformers' ``ModelOutput`` access on a dataclass: ``out["last_hidden_state"]``, ``out[0]``
    (the first field that is not None), ``out.to_tuple()``, ``out.keys()``, iteration over the keys."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.keys())

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class EncoderOutput(OutputAccess):
    """What an encoder returns (indexable as Transformers' ``ModelOutput``, see :class:`OutputAccess`).

    last_hidden_state: ``(batch, seq_len, hidden_size) float32``.
    pooler_output: ``(batch, hidden_size) float32`` (BERT only, else None).
    hidden_states: embeddings output then every layer's, each ``(batch, seq_len, hidden_size)``
        (on request, else None).
    attentions: one ``(batch, num_attention_heads, seq_len, seq_len) float32`` per layer (on request).
    """

    last_hidden_state: np.ndarray
    pooler_output: np.ndarray | None = None
    hidden_states: tuple[np.ndarray, ...] | None = None
    attentions: tuple[np.ndarray, ...] | None = None
