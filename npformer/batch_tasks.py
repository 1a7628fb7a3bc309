"""The tasks of ``npformer batch`` (:mod:`npformer.distributed`), one record each: the pipeline a
task runs, its output columns' Arrow types, and how a chunk of rows becomes their values. Needs
the ``distributed`` extra (pyarrow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from npformer.extras import require_extra

require_extra("distributed", "pyarrow")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from npformer.cross_encoder import CrossEncoder  # noqa: E402

ENTITY = pa.struct(
    [("entity_group", pa.string()), ("score", pa.float64()), ("word", pa.string()), ("start", pa.int64()), ("end", pa.int64())]
)
SPARSE_ENTRY = pa.struct([("index", pa.int64()), ("value", pa.float32())])


@dataclass(frozen=True)
class BatchTask:
    """One task of ``npformer batch``: the pipeline ``task`` it runs, its output columns' Arrow
    types (``fields(pipe) -> [(name, type)]``) and their values for a chunk of valid rows
    (``columns(pipe, texts, rows, job) -> {name: list}``, in order); ``pair`` tasks read a second
    text per row (qa: the context; rerank: the document)."""

    task: str
    fields: Callable
    columns: Callable
    pair: bool = False  # each row also needs a second text, in ``job.context_column``


def _qa(pipe, texts, rows, job) -> dict:
    out = pipe(question=texts, context=[r[job.context_column] for r in rows])
    out = [out] if isinstance(out, dict) else out
    return {k: [o[k] for o in out] for k in ("answer", "score", "start", "end")}


def _zero_shot(pipe, texts, rows, job) -> dict:
    if not job.labels:
        raise ValueError("zero-shot needs candidate labels (npformer batch zero-shot --labels a,b,c)")
    out = pipe(texts, list(job.labels))
    out = [out] if isinstance(out, dict) else out
    return {"labels": [o["labels"] for o in out], "scores": [[float(x) for x in o["scores"]] for o in out]}


def _rerank(pipe, texts, rows, job) -> dict:
    scores = CrossEncoder.from_pipeline(pipe).predict([(t, r[job.context_column]) for t, r in zip(texts, rows)])
    return {"score": [float(x) for x in np.atleast_1d(scores).reshape(len(texts), -1)[:, 0]]}


def _labels(pipe, texts, rows, job) -> dict:
    out = pipe(texts)
    return {"label": [o["label"] for o in out], "score": [float(o["score"]) for o in out]}


LABELS = BatchTask("text-classification", lambda pipe: [("label", pa.string()), ("score", pa.float64())], _labels)
TASKS = {
    "sentiment": LABELS,
    "text-classification": LABELS,
    "ner": BatchTask(
        "token-classification",
        lambda pipe: [("entities", pa.list_(ENTITY))],
        lambda pipe, texts, rows, job: {
            "entities": [
                [{k: (float(v) if k == "score" else v) for k, v in e.items()} for e in ents]
                for ents in pipe(texts, aggregation_strategy="simple")
            ]
        },
    ),
    "embed": BatchTask(
        "sentence-embeddings",
        lambda pipe: [("embedding", pa.list_(pa.float32(), pipe.config.hidden_size * len(pipe.pooling.modes)))],
        lambda pipe, texts, rows, job: {"embedding": list(pipe.encode(texts))},
    ),
    "qa": BatchTask(
        "question-answering",
        lambda pipe: [("answer", pa.string()), ("score", pa.float64()), ("start", pa.int64()), ("end", pa.int64())],
        _qa,
        pair=True,
    ),
    "zero-shot": BatchTask(
        "zero-shot-classification",
        lambda pipe: [("labels", pa.list_(pa.string())), ("scores", pa.list_(pa.float64()))],
        _zero_shot,
    ),
    "rerank": BatchTask("text-classification", lambda pipe: [("score", pa.float64())], _rerank, pair=True),
    "sparse-embed": BatchTask(
        "sparse-embeddings",
        lambda pipe: [("embedding", pa.list_(SPARSE_ENTRY))],
        lambda pipe, texts, rows, job: {"embedding": [v.to_json() for v in pipe(texts)]},
    ),
    "colbert": BatchTask(
        "late-interaction",
        lambda pipe: [("embeddings", pa.list_(pa.list_(pa.float32(), pipe.embedding_size)))],
        lambda pipe, texts, rows, job: {"embeddings": [v.tolist() for v in pipe(texts)]},
    ),
}
