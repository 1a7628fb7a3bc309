"""``"sentiment-analysis"`` / ``"text-classification"``, as Transformers' TextClassificationPipeline."""

from __future__ import annotations

import warnings

import numpy as np

from npformer.pipelines.base import Pipeline, check_texts, sigmoid, softmax
from npformer.tokenizer.encoding import padding_strategy

FUNCTIONS = ("softmax", "sigmoid", "none")
_UNSET = object()


class TextClassificationPipeline(Pipeline):
    """Classify texts (or text pairs) with a sequence-classification model.

    ``pipe(text)`` -> ``[{"label": str, "score": float}]``; ``pipe([t1, t2])`` -> one dict per text.
    With ``top_k=k`` (``None`` = every label) each text gets a list of the ``k`` best labels, by
    decreasing score, as in Transformers 4.57. ``function_to_apply`` is ``"softmax"``,
    ``"sigmoid"`` or ``"none"``; by default it follows ``problem_type`` / ``num_labels``.
    Inputs may be ``{"text": ..., "text_pair": ...}`` dicts.

    One result per input, always. The model reads one window: texts longer than its maximum
    (``model_max_length``, at most ``max_position_embeddings``) are cut to it by default, as
    sentence-transformers does (Transformers would fail on them); ``truncation=False`` makes an
    over-long input a ``ValueError`` naming its index; ``max_length`` sets a shorter window. An
    empty text, or one with nothing left after normalization (only whitespace or control / format
    characters), is classified as ``[CLS] [SEP]``, as Transformers does: its label reflects the
    model, not the text.
    """

    task = "text-classification"

    def __call__(
        self,
        inputs,
        *,
        top_k=_UNSET,
        function_to_apply: str | None = None,
        truncation: bool = True,  # noqa: PLR0913
        max_length: int | None = None,
        text_pair: str | None = None,
        return_all_scores: bool | None = None,
        padding: bool | str = False,
    ):
        padding_strategy(padding)  # as Transformers' tokenizer argument; rows are masked, so it changes no score
        if text_pair is not None:  # Transformers hands it to the tokenizer: the pair of a single text
            if not isinstance(inputs, str) or not isinstance(text_pair, str):
                raise ValueError(
                    'text_pair= pairs one text with one str; for several pairs give [{"text": ..., "text_pair": ...}, ...]'
                )
            inputs = {"text": inputs, "text_pair": text_pair}
            single_str = True
        else:
            single_str = isinstance(inputs, str)
        if return_all_scores is not None and top_k is _UNSET:  # deprecated in Transformers, still accepted
            warnings.warn("return_all_scores is deprecated: use top_k=None (all scores) or top_k=1", FutureWarning, stacklevel=3)
            return self._legacy_all_scores(inputs, single_str, bool(return_all_scores), function_to_apply, truncation, max_length)
        single = isinstance(inputs, (str, dict))
        items = [inputs] if single else list(inputs)
        pairs = []
        for item in items:
            if isinstance(item, dict):
                if "text" not in item:
                    raise ValueError("a dict input needs a 'text' key (and optionally 'text_pair')")
                check_texts(item["text"], allow_empty=True)
                if item.get("text_pair") is not None:
                    check_texts(item["text_pair"], "text_pair", allow_empty=True)
                pairs.append((item["text"], item.get("text_pair") or None))
            else:
                pairs.append((check_texts(item, allow_empty=True)[0][0], None))
        encodings = self.encode_one_window(pairs, truncation, max_length)
        logits = self.forward(encodings, self.logits)
        fn = self._function(function_to_apply)
        legacy = top_k is _UNSET
        results = [self._postprocess(row, fn, 1 if legacy else top_k, legacy) for row in logits]
        if single:  # as Transformers: a lone str (not a dict) without top_k gets a one-item list
            return [results[0]] if legacy and (isinstance(inputs, str) or single_str) else results[0]
        return results

    def _legacy_all_scores(self, inputs, single_str: bool, all_scores: bool, function_to_apply, truncation, max_length):
        """``return_all_scores=True``: every label's score in label order per input (a lone str's wrapped
        in a list); ``False``: the best label, as the call without ``top_k``. As Transformers 4.57."""
        if not all_scores:
            return self(inputs, function_to_apply=function_to_apply, truncation=truncation, max_length=max_length)
        ranked = self(inputs, top_k=None, function_to_apply=function_to_apply, truncation=truncation, max_length=max_length)
        rows = [ranked] if isinstance(inputs, (str, dict)) else ranked
        order = {self.label(i): i for i in range(len(rows[0]))} if rows else {}
        rows = [sorted(row, key=lambda d: order[d["label"]]) for row in rows]
        return [rows[0]] if single_str else rows[0] if isinstance(inputs, dict) else rows

    def _function(self, name: str | None) -> str:
        if name is not None:
            if name.lower() not in FUNCTIONS:
                raise ValueError(f"function_to_apply must be one of {FUNCTIONS}, got {name!r}")
            return name.lower()
        c = self.config
        if c.problem_type == "regression":
            return "none"
        if c.problem_type == "multi_label_classification" or c.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def _postprocess(self, logits: np.ndarray, fn: str, top_k, legacy: bool):
        scores = softmax(logits) if fn == "softmax" else sigmoid(logits) if fn == "sigmoid" else logits
        if legacy:
            best = int(np.argmax(scores))
            return {"label": self.label(best), "score": float(scores[best])}
        ranked = sorted(
            ({"label": self.label(i), "score": float(s)} for i, s in enumerate(scores)), key=lambda d: d["score"], reverse=True
        )
        return ranked if top_k is None else ranked[:top_k]
