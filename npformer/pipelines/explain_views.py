"""What the explain page (:mod:`npformer.explain`) shows of each task's prediction: a task record's
``explain`` is one of these :class:`ExplainView` records (None: the page does not show the task).
Each ``prediction(pipe, text, context, top_k)`` returns the JSON the page draws."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ExplainView:
    """``prediction(pipe, text, context, top_k) -> dict`` for the page; ``needs_context``: the text
    is a question read with a ``context`` (question answering)."""

    prediction: Callable[..., dict]
    needs_context: bool = False


def _label_scores(pipe, text: str, context: str | None, top_k: int) -> dict:
    return {"scores": [{"label": d["label"], "score": float(d["score"])} for d in pipe(text, top_k=None)]}


def _entities(pipe, text: str, context: str | None, top_k: int) -> dict:
    entities = pipe(text, aggregation_strategy="simple")
    per_token = pipe(text, aggregation_strategy="none", ignore_labels=[], return_probabilities=True)
    return {
        "entities": [
            {
                "label": e["entity_group"],
                "score": float(e["score"]),
                "start": int(e["start"]),
                "end": int(e["end"]),
                "word": e["word"],
            }
            for e in entities
        ],
        "token_entropy": [
            {"start": int(e["start"]), "end": int(e["end"]), "label": e["entity"], "entropy": float(e["entropy"])}
            for e in per_token
        ],
    }


def _answers(pipe, text: str, context: str | None, top_k: int) -> dict:
    answers = pipe(question=text, context=context, top_k=top_k)
    answers = [answers] if isinstance(answers, dict) else answers
    return {
        "answers": [
            {"answer": a["answer"], "score": float(a["score"]), "start": int(a["start"]), "end": int(a["end"])} for a in answers
        ]
    }


def _masks(pipe, text: str, context: str | None, top_k: int) -> dict:
    out = pipe(text, top_k=top_k)
    out = out if out and isinstance(out[0], list) else [out]
    return {"masks": [[{"token": c["token_str"], "score": float(c["score"])} for c in candidates] for candidates in out]}


LABEL_SCORES = ExplainView(_label_scores)
ENTITIES = ExplainView(_entities)
ANSWERS = ExplainView(_answers, needs_context=True)
MASKS = ExplainView(_masks)
