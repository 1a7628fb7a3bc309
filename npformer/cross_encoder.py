"""Cross-encoders with sentence-transformers' ``CrossEncoder`` surface: ``predict(pairs)`` and
``rank(query, documents)`` over a sequence-classification checkpoint that reads both texts at
once (a reranker: one label; an NLI model: several). Reference: sentence-transformers 5.1's
``CrossEncoder`` (its activation from ``config.json``: ``sentence_transformers.activation_fn``,
or the older ``sbert_ce_default_activation_function``; by default sigmoid for one label and the
identity otherwise).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from npformer.files import read_json
from npformer.pipelines import pipeline
from npformer.pipelines.base import sigmoid, softmax

# torch activation class names sentence-transformers saves -> what npformer applies
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Sigmoid": sigmoid,
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0),
}


class CrossEncoder:
    """Scores of text pairs by a cross-encoder, as sentence-transformers' ``CrossEncoder``.

    Args:
        model_name_or_path: a checkpoint directory or Hub id (as :func:`npformer.pipeline` takes).
        max_length: the most tokens a pair is cut to (``longest_first``); default the model's.
        activation_fn: ``"sigmoid"``, ``"identity"``, ``"tanh"``, ``"relu"`` or a function of a
            float32 array; default the checkpoint's (see the module docstring).
        dtype: ``"float32"`` or ``"int8"``.
        revision: the Hub revision.

    Raises ``ValueError`` naming ``config.json`` for an activation npformer does not know (it is
    never imported), and what :func:`npformer.pipeline` raises for the checkpoint.
    """

    def __init__(
        self,
        model_name_or_path,
        *,
        max_length: int | None = None,
        activation_fn: str | Callable | None = None,
        dtype: str = "float32",
        revision: str | None = None,
    ):
        self._setup(
            pipeline("text-classification", model=model_name_or_path, dtype=dtype, revision=revision), max_length, activation_fn
        )

    @classmethod
    def from_pipeline(cls, pipe, *, max_length: int | None = None, activation_fn: str | Callable | None = None) -> "CrossEncoder":
        """A cross-encoder over a ``"text-classification"`` pipeline already loaded (the CLI's)."""
        self = cls.__new__(cls)
        self._setup(pipe, max_length, activation_fn)
        return self

    def _setup(self, pipe, max_length: int | None, activation_fn) -> None:
        self.pipe = pipe
        self.config = self.pipe.config
        self.num_labels = self.config.num_labels
        self.max_length = max_length
        self.activation_fn = self._activation(activation_fn) if activation_fn is not None else self._default()

    def _default(self) -> Callable[[np.ndarray], np.ndarray]:
        source = self.pipe.model_dir / "config.json" if self.pipe.model_dir is not None else None
        raw = read_json(source) if source is not None and source.is_file() else {}
        name = (raw.get("sentence_transformers") or {}).get("activation_fn") if isinstance(raw, dict) else None
        name = name or (raw.get("sbert_ce_default_activation_function") if isinstance(raw, dict) else None)
        if name is None:
            return ACTIVATIONS["Sigmoid" if self.num_labels == 1 else "Identity"]
        short = str(name).rsplit(".", 1)[-1]
        if short not in ACTIVATIONS:
            raise ValueError(f"{source}: activation_fn {name!r} is not one npformer applies ({', '.join(sorted(ACTIVATIONS))})")
        return ACTIVATIONS[short]

    @staticmethod
    def _activation(fn: str | Callable) -> Callable[[np.ndarray], np.ndarray]:
        if callable(fn):
            return fn
        names = {k.lower(): v for k, v in ACTIVATIONS.items()}
        if str(fn).lower() not in names:
            raise ValueError(f"activation_fn must be one of {sorted(names)} or a function, got {fn!r}")
        return names[str(fn).lower()]

    def predict(
        self,
        sentences,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,  # noqa: PLR0913 - as sentence-transformers
        activation_fn: str | Callable | None = None,
        apply_softmax: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
    ):
        """Scores of ``sentences``: a list of ``(text, text_pair)`` (or one pair) -> float32 array
        ``(n,)`` for a one-label model, ``(n, num_labels)`` otherwise (one pair: its row). The
        activation is applied to the logits, then, with ``apply_softmax`` and several labels, a
        softmax. Raises ``ValueError`` for an input that is not a pair of str."""
        if convert_to_tensor:
            raise ValueError("convert_to_tensor: npformer returns NumPy arrays")
        single = isinstance(sentences, (tuple, list)) and len(sentences) == 2 and all(isinstance(s, str) for s in sentences)
        pairs = [tuple(sentences)] if single else [tuple(p) for p in sentences]
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(s, str) for s in pair):
                raise ValueError(f"input {i} is not a pair of str: {pair!r}")
        if not pairs:
            return np.zeros((0,) if self.num_labels == 1 else (0, self.num_labels), np.float32)
        encodings = self.pipe.encode_one_window(pairs, True, self.max_length)
        logits = np.stack(self.pipe.forward(encodings, self.pipe.logits, batch_size=batch_size)).astype(np.float32)
        scores = (self._activation(activation_fn) if activation_fn is not None else self.activation_fn)(logits)
        if apply_softmax and self.num_labels > 1:
            scores = softmax(scores)
        scores = np.asarray(scores, np.float32)
        if self.num_labels == 1:
            scores = scores[:, 0]
        return scores[0] if single else scores

    def rank(  # noqa: PLR0913 - as sentence-transformers
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: str | Callable | None = None,
        apply_softmax: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
    ) -> list[dict]:
        """``[{"corpus_id", "score"(, "text")}]`` of ``documents`` by decreasing score against
        ``query`` (ties in document order), the ``top_k`` first. Needs a one-label model (raises
        ``ValueError`` otherwise, as sentence-transformers)."""
        if self.num_labels != 1:
            raise ValueError(f"rank needs a model with one label; this one has {self.num_labels}")
        scores = self.predict(
            [(query, d) for d in documents],
            batch_size=batch_size,
            activation_fn=activation_fn,
            apply_softmax=apply_softmax,
            convert_to_tensor=convert_to_tensor,
        )
        order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
        ranked = [
            {"corpus_id": i, "score": float(scores[i])} | ({"text": documents[i]} if return_documents else {}) for i in order
        ]
        return ranked[:top_k] if top_k is not None else ranked
