"""Sentence-transformers pooling: hidden states -> one vector per text.

Reads a sentence-transformers checkpoint's ``modules.json``, ``1_Pooling/config.json`` (modes
``cls``, ``max``, ``mean``, ``mean_sqrt_len``; several modes are concatenated in that order, as
sentence-transformers' ``Pooling`` does), whether a ``Normalize`` module follows (L2 norm), and
``max_seq_length`` and ``do_lower_case`` from ``sentence_bert_config.json``. A plain Transformers checkpoint gets mean
pooling without normalization, sentence-transformers' default for it. A module npformer does not
implement (``Dense``, ``SpladePooling``, ``MLMTransformer``...) is refused by name, never guessed.

:class:`SentenceSettings` reads ``config_sentence_transformers.json``: the ``prompts``, the
``default_prompt_name`` and the ``similarity_fn_name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npformer.files import read_json

MODES = ("cls", "max", "mean", "mean_sqrt_len")
# the modules.json types npformer runs: the encoder, pooling, L2 normalization
MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x (..., dim)`` divided by their L2 norm (at least 1e-12), as
    ``torch.nn.functional.normalize`` (sentence-transformers' ``Normalize``); float32 in, float32 out."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


@dataclass
class Pooling:
    """How to pool: ``modes`` (subset of :data:`MODES`), ``normalize``, ``max_seq_length`` (tokens or
    None); and how sentence-transformers' ``Transformer`` module prepares a text: stripped of
    surrounding whitespace, lowercased when ``do_lower_case``."""

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False

    def prepare(self, text: str) -> str:
        """``text`` as sentence-transformers tokenizes it (``str.strip``, then ``lower`` when set)."""
        text = text.strip()
        return text.lower() if self.do_lower_case else text

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Pooling":
        """Read the sentence-transformers files of ``directory`` (defaults when absent).

        Raises ``ValueError`` for a pooling mode npformer does not implement.
        """
        directory = Path(directory)
        modules_file = directory / "modules.json"
        if not modules_file.is_file():
            return cls()
        modules = read_json(modules_file)
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ValueError(f"{modules_file} must hold a list of module objects, got {type(modules).__name__}")
        unknown = [str(m.get("type")) for m in modules if m.get("type") not in MODULES]
        if unknown:
            splade = (
                "; a SPLADE model: npformer.SparseEncoder"
                if "sparse_encoder" in unknown[0]
                else "; a PyLate ColBERT model: npformer.ColBERT"
                if unknown[0].startswith("pylate.")
                else ""
            )
            raise ValueError(
                f"{modules_file}: module {unknown[0]!r} is not one npformer runs (it runs "
                f"{', '.join(t.rsplit('.', 1)[1] for t in MODULES)} here{splade})"
            )
        pooling_dir = next(
            (directory / str(m.get("path", "")) for m in modules if m.get("type") == "sentence_transformers.models.Pooling"), None
        )
        modes: tuple[str, ...] = ("mean",)
        if pooling_dir is not None and (pooling_dir / "config.json").is_file():
            config = read_json(pooling_dir / "config.json")
            if not isinstance(config, dict):
                raise ValueError(f"{pooling_dir / 'config.json'} must hold a JSON object of pooling_mode_* fields")
            unsupported = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in KEYS.values()]
            if unsupported:
                raise ValueError(
                    f"{pooling_dir / 'config.json'}: pooling modes {unsupported} are not supported (npformer implements {MODES})"
                )
            modes = tuple(m for m in MODES if config.get(KEYS[m])) or ("mean",)
            if config.get("include_prompt", True) is not True:
                raise ValueError(
                    f"{pooling_dir / 'config.json'}: include_prompt=false (pooling without the prompt's tokens) is not supported"
                )
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        max_seq_length, do_lower_case = None, False
        st_config = directory / "sentence_bert_config.json"
        if st_config.is_file():
            data = read_json(st_config)
            data = data if isinstance(data, dict) else {}
            max_seq_length, do_lower_case = data.get("max_seq_length"), data.get("do_lower_case", False)
            if not isinstance(do_lower_case, bool):
                raise ValueError(f"{st_config}: field 'do_lower_case' must be true or false, got {do_lower_case!r}")
            if max_seq_length is not None and (
                not isinstance(max_seq_length, int) or isinstance(max_seq_length, bool) or max_seq_length < 1
            ):
                raise ValueError(f"{st_config}: field 'max_seq_length' must be a positive integer, got {max_seq_length!r}")
        return cls(modes, normalize, max_seq_length, do_lower_case)

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
        return l2_normalize(out) if self.normalize else out


@dataclass
class SentenceSettings:
    """``config_sentence_transformers.json``: ``prompts`` (name -> text put before each sentence;
    ``query`` and ``document`` are always there, empty unless the file sets them, as in
    sentence-transformers 5), ``default_prompt_name`` (used when a call names none) and
    ``similarity_fn_name`` (``cosine``, ``dot``, ``euclidean`` or ``manhattan``), as
    sentence-transformers reads them."""

    prompts: dict[str, str]
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"

    @classmethod
    def from_pretrained(cls, directory: str | Path | None) -> "SentenceSettings":
        """Read the file of ``directory`` (defaults without one). Raises ``ValueError`` naming the
        file and field when a field has the wrong type or names an unknown function or prompt."""
        file = Path(directory) / "config_sentence_transformers.json" if directory is not None else None
        if file is None or not file.is_file():
            return cls({"query": "", "document": ""})
        data = read_json(file)
        if not isinstance(data, dict):
            raise ValueError(f"{file} must hold a JSON object")
        prompts = data.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise ValueError(f"{file}: field 'prompts' must map names to prompt strings")
        default = data.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise ValueError(f"{file}: default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}")
        function = data.get("similarity_fn_name") or "cosine"
        if function not in SIMILARITY_FUNCTIONS:
            raise ValueError(f"{file}: similarity_fn_name {function!r} is not one of {SIMILARITY_FUNCTIONS}")
        return cls({"query": "", "document": "", **prompts}, default, function)
