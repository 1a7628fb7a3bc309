"""``"fill-mask"``: the most likely tokens for each ``[MASK]``, as Transformers' FillMaskPipeline."""

from __future__ import annotations

import numpy as np

from npformer.pipelines.base import Pipeline, check_texts, softmax
from npformer.pipelines.base import tokenizer_kwargs as check_tokenizer_kwargs


class FillMaskPipeline(Pipeline):
    """``pipe("Paris is the [MASK] of France.")`` -> ``top_k`` dicts ``{"score", "token", "token_str",
    "sequence"}``; with several masks, one such list per mask; a list of texts gives one result per text.

    ``targets`` (a str or list of str) restricts the candidates; a target missing from the vocabulary
    is replaced by its first WordPiece, as Transformers does. One result per input. A text longer
    than the model's maximum is a ``ValueError`` naming its index, unless ``truncation=True`` (then
    its masks must lie in the kept window). Raises ``ValueError`` when a text has no mask token.
    """

    task = "fill-mask"

    def __call__(
        self,
        inputs,
        *,
        top_k: int = 5,
        targets=None,
        truncation: bool | None = None,  # noqa: PLR0913
        max_length: int | None = None,
        tokenizer_kwargs: dict | None = None,
    ):
        """Predict every mask token of each text (see the class docstring).

        ``inputs`` is a str or an iterable of str; ``targets`` a str or list of str; ``max_length``
        tokens per text (default the model's maximum). Returns, per text, ``top_k`` dicts ``{"score":
        float (softmax probability), "token": int, "token_str": str, "sequence": str}`` (one list per
        mask when a text has several), as Transformers 4.57. ``tokenizer_kwargs`` may hold
        ``truncation``, ``max_length`` and ``padding`` (padding changes no result). Raises
        ``ValueError`` naming the input without a mask token or longer than the model's maximum
        (unless ``truncation=True``).
        """
        options = check_tokenizer_kwargs(tokenizer_kwargs, "tokenizer_kwargs", truncation=truncation, max_length=max_length)
        truncation, max_length = options.get("truncation", False), options.get("max_length")
        texts, single = check_texts(inputs)
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        mask_id = self.tokenizer.mask_token_id
        encodings = self.encode_one_window([(t, None) for t in texts], truncation, max_length)
        for i, (text, enc) in enumerate(zip(texts, encodings, strict=True)):
            if mask_id not in enc.ids:
                where = "the input" if single else f"input {i}"
                cut = " within the model's maximum length" if enc.truncated else ""
                raise ValueError(f"no mask token ({self.tokenizer.mask_token}) found{cut} in {where}: {text[:80]!r}")
        target_ids = self._target_ids(targets) if targets is not None else None
        if target_ids is not None:
            top_k = min(top_k, len(target_ids))
        logits = self.forward(encodings, self.mask_logits)
        results = [self._postprocess(enc, row, top_k, target_ids) for enc, row in zip(encodings, logits, strict=True)]
        return results[0] if single else results

    def mask_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """Logits at each row's mask positions, ``(batch, n_masks, vocab_size) float32`` (a row with
        fewer masks than the batch's most repeats its last one)."""
        positions = [np.flatnonzero(row == self.tokenizer.mask_token_id) for row in input_ids]
        width = max(len(p) for p in positions)
        padded = np.array([np.pad(p, (0, width - len(p)), mode="edge") for p in positions])
        return self.model(input_ids, attention_mask, token_type_ids, positions=padded).logits

    def _target_ids(self, targets) -> np.ndarray:
        targets = [targets] if isinstance(targets, str) else list(targets)
        ids = []
        for target in targets:
            if target in self.tokenizer.vocab:
                ids.append(self.tokenizer.vocab[target])
            else:
                pieces = self.tokenizer.encode(target).ids
                if pieces:
                    ids.append(pieces[0])
        if not ids:
            raise ValueError("at least one target must be given (none of the targets gives a token)")
        return np.array(list(set(ids)))

    def _postprocess(self, enc, logits: np.ndarray, top_k: int, target_ids):
        ids = np.array(enc.ids)
        positions = np.flatnonzero(ids == self.tokenizer.mask_token_id)
        single_mask = len(positions) == 1
        result = []
        for k, position in enumerate(positions):
            probs = softmax(logits[k].astype(np.float32)).astype(np.float32)
            if target_ids is not None:
                probs = probs[target_ids]
            best = np.argsort(-probs, kind="stable")[:top_k]
            row = []
            for p in best:
                token = int(target_ids[p]) if target_ids is not None else int(p)
                filled = ids.copy()
                filled[position] = token
                filled = filled[filled != self.tokenizer.pad_token_id]
                row.append(
                    {
                        "score": float(probs[p]),
                        "token": token,
                        "token_str": self.tokenizer.decode([token]),
                        "sequence": self.tokenizer.decode(filled, skip_special_tokens=single_mask),
                    }
                )
            result.append(row)
        return result[0] if single_mask else result
