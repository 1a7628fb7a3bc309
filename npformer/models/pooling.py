"""Sentence-transformers pooling: hidden states -> one vector per text.

Reads a sentence-transformers checkpoint's ``modules.json``, ``1_Pooling/config.json`` (modes
``cls``, ``max``, ``mean``, ``mean_sqrt_len``; several modes are concatenated in that order, as
sentence-transformers' ``Pooling`` does), whether a ``Normalize`` module follows (L2 norm), and
``max_seq_length`` from ``sentence_bert_config.json``. A plain Transformers checkpoint gets mean
pooling without normalization, sentence-transformers' default for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODES = ("cls", "max", "mean", "mean_sqrt_len")
KEYS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
        "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}


@dataclass
class Pooling:
    """How to pool: ``modes`` (subset of :data:`MODES`), ``normalize``, ``max_seq_length`` (tokens or None)."""

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Pooling":
        """Read the sentence-transformers files of ``directory`` (defaults when absent).

        Raises ``ValueError`` for a pooling mode npformer does not implement.
        """
        directory = Path(directory)
        modules_file = directory / "modules.json"
        if not modules_file.is_file():
            return cls()
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        pooling_dir = next((directory / m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")),
                           None)
        modes: tuple[str, ...] = ("mean",)
        if pooling_dir is not None and (pooling_dir / "config.json").is_file():
            config = json.loads((pooling_dir / "config.json").read_text(encoding="utf-8"))
            unsupported = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in KEYS.values()]
            if unsupported:
                raise ValueError(f"pooling modes {unsupported} are not supported (npformer implements {MODES})")
            modes = tuple(m for m in MODES if config.get(KEYS[m])) or ("mean",)
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        max_seq_length = None
        st_config = directory / "sentence_bert_config.json"
        if st_config.is_file():
            max_seq_length = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        return cls(modes, normalize, max_seq_length)

    def __call__(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``hidden (batch, seq, hidden) float32``, ``attention_mask (batch, seq)`` ->
        ``(batch, hidden * len(modes)) float32``. Reference: sentence_transformers.models.Pooling."""
        mask = attention_mask[..., None].astype(np.float32)  # [B, S, 1]
        counts = np.maximum(mask.sum(axis=1), 1e-9)  # [B, 1]
        parts = []
        for mode in self.modes:
            if mode == "cls":
                parts.append(hidden[:, 0])
            elif mode == "max":
                parts.append(np.where(mask > 0, hidden, np.float32(-1e9)).max(axis=1))
            elif mode == "mean":
                parts.append((hidden * mask).sum(axis=1) / counts)
            else:
                parts.append((hidden * mask).sum(axis=1) / np.sqrt(counts))
        out = np.concatenate(parts, axis=-1).astype(np.float32)
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out
