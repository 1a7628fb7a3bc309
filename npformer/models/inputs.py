"""Checking and defaulting an encoder's inputs (``input_ids``, ``attention_mask``, ``token_type_ids``)."""

from __future__ import annotations

import numpy as np

from npformer.config import Config


def check_inputs(config: Config, input_ids, attention_mask, token_type_ids):
    """Validate and default the inputs; returns ``(batch, seq)`` int64 / int32 arrays.

    Raises ``ValueError`` for a wrong rank, mismatched shapes, ids outside the vocabulary, a
    sequence longer than ``max_position_embeddings`` or a type id outside ``type_vocab_size``.
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim == 1:
        input_ids = input_ids[None, :]
    if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
        raise ValueError(
            f"input_ids must be a (batch, seq_len) integer array, got shape {input_ids.shape} dtype {input_ids.dtype}"
        )
    batch, seq = input_ids.shape
    if seq > config.max_length:
        raise ValueError(
            f"sequence length {seq} exceeds the model's maximum of {config.max_length} tokens "
            f"(max_position_embeddings={config.max_position_embeddings}); truncate the input or split "
            f"it into windows"
        )
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
        raise ValueError(f"input_ids must lie in [0, {config.vocab_size}), got [{input_ids.min()}, {input_ids.max()}]")

    def default(arr, name, fill):
        if arr is None:
            return np.full((batch, seq), fill, dtype=np.int64)
        arr = np.asarray(arr)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.shape != (batch, seq):
            raise ValueError(f"{name} has shape {arr.shape} but input_ids has shape {(batch, seq)}")
        return arr.astype(np.int64, copy=False)

    attention_mask = default(attention_mask, "attention_mask", 1)
    token_type_ids = default(token_type_ids, "token_type_ids", 0)
    if config.type_vocab_size and token_type_ids.size and token_type_ids.max() >= config.type_vocab_size:
        raise ValueError(f"token_type_ids must be < type_vocab_size={config.type_vocab_size}")
    return input_ids.astype(np.int64, copy=False), attention_mask, token_type_ids
