"""``"zero-shot-classification"`` on a natural-language-inference model, as Transformers 4.57's
ZeroShotClassificationPipeline (Yin et al. 2019): each candidate label becomes the hypothesis
``hypothesis_template.format(label)``, the model reads ``(text, hypothesis)`` (the text truncated
first), and

* one label of several (``multi_label=False``): softmax of the entailment logits over the labels;
* ``multi_label=True`` (or a single label): for each label alone, softmax over (contradiction,
  entailment), its entailment probability.

The entailment class is the first label of ``label2id`` that starts with "entail" (any case).
On an embedding model the same task name classifies by similarity instead
(:class:`npformer.pipelines.embeddings.ZeroShotClassificationPipeline`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npformer.files import read_json
from npformer.models.heads import SequenceClassifier
from npformer.pipelines.base import Pipeline, check_texts


def entailment_id(label2id: dict[str, int]) -> int:
    """The id of the first label starting with "entail" (case-insensitive), else -1."""
    return next((i for label, i in label2id.items() if label.lower().startswith("entail")), -1)


def is_nli(source) -> bool:
    """Whether ``source`` (a checkpoint directory, or a loaded model) is an NLI classifier: a
    sequence-classification model with an "entail..." label in ``label2id`` or ``id2label``."""
    if isinstance(source, Path):
        config = source / "config.json"
        data = read_json(config) if config.is_file() else {}
        if not isinstance(data, dict):
            return False
        heads = [str(a) for a in data.get("architectures") or []]
        labels = [*(data.get("label2id") or {}), *map(str, (data.get("id2label") or {}).values())]
    else:
        if not isinstance(source, SequenceClassifier):
            return False
        heads = ["ForSequenceClassification"]
        labels = [*source.config.label2id, *source.config.id2label.values()]
    return any(h.endswith("ForSequenceClassification") for h in heads) and any(
        str(label).lower().startswith("entail") for label in labels
    )


class NLIZeroShotPipeline(Pipeline):
    """Zero-shot classification with an NLI model (see the module docstring).

    ``pipe(text, candidate_labels)`` -> ``{"sequence", "labels", "scores"}`` with labels by
    decreasing score; a list of texts gives one dict per text. ``candidate_labels`` is a list of
    str or one comma-separated str. Raises ``ValueError`` without a label or text, and for a
    ``hypothesis_template`` that does not change with the label.
    """

    task = "zero-shot-classification"

    def __call__(
        self,
        inputs,
        candidate_labels=None,
        *,
        hypothesis_template: str = "This example is {}.",  # noqa: PLR0913
        multi_label: bool = False,
        truncation: bool = True,
        max_length: int | None = None,
        temperature: float | None = None,
    ):
        if temperature is not None:
            raise ValueError(
                "temperature applies to zero-shot classification by similarity (an embedding model); this is an NLI model"
            )
        texts, single = check_texts(inputs, allow_empty=True)
        if isinstance(candidate_labels, str):
            candidate_labels = [s.strip() for s in candidate_labels.split(",") if s.strip()]
        if not candidate_labels or not texts:
            raise ValueError("You must include at least one label and at least one sequence.")
        if hypothesis_template.format(candidate_labels[0]) == hypothesis_template:
            raise ValueError(
                f"The provided hypothesis_template {hypothesis_template!r} was not able to be formatted "
                f"with the target labels; it needs a {{}} for the label"
            )
        hypotheses = [hypothesis_template.format(label) for label in candidate_labels]
        limit = self.check_max_length(max_length)
        pairs = [(text, h) for text in texts for h in hypotheses]
        encodings = []
        for text_pairs in (pairs[i : i + len(hypotheses)] for i in range(0, len(pairs), len(hypotheses))):
            # only the text is cut, as Transformers (ONLY_FIRST); a hypothesis too long for it runs whole
            try:
                encodings += self.tokenizer.encode_batch(
                    text_pairs, truncation="only_first" if truncation else False, max_length=limit, overflow=False
                )
            except ValueError:
                encodings += self.tokenizer.encode_batch(text_pairs, overflow=False)
        logits = np.stack(self.forward(encodings, self.logits)).astype(np.float32)
        logits = logits.reshape(len(texts), len(hypotheses), -1)
        entail = entailment_id(self.config.label2id)
        results = []
        for text, rows in zip(texts, logits):
            if multi_label or len(candidate_labels) == 1:
                contradiction = -1 if entail == 0 else 0
                pair = rows[:, [contradiction, entail]]
                e = np.exp(pair)
                scores = (e / e.sum(-1, keepdims=True))[:, 1]
            else:
                e = np.exp(rows[:, entail])
                scores = e / e.sum(-1, keepdims=True)
            order = list(reversed(scores.argsort()))
            results.append(
                {"sequence": text, "labels": [candidate_labels[i] for i in order], "scores": [float(scores[i]) for i in order]}
            )
        return results[0] if single else results
