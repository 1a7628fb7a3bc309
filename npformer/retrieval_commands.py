"""The retrieval commands of the ``npformer`` CLI: ``search`` (queries against a corpus embedded
once, by a dense, a sparse (SPLADE) or a late-interaction (ColBERT) model: the checkpoint says
which), ``rerank`` (a cross-encoder over the corpus), ``sparse-embed`` and ``colbert``
(per-text vectors as JSON lines). Registered as :class:`~npformer.commands.Command` records.

A corpus's vectors can be kept for later runs (``--save-embeddings``): a ``.npy`` array for a
dense model; a ``.npz`` file for the others, never unpickled: ``indices``, ``values``, ``lengths``
(entries per text) and ``dim`` for sparse vectors, ``vectors`` and ``lengths`` (tokens per text)
for per-token vectors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from npformer.colbert import colbert_scores
from npformer.commands import Command, UserError, _texts, _top_k, register_command
from npformer.cross_encoder import CrossEncoder
from npformer.hub import resolve
from npformer.output import JsonLines, load_array, save_array
from npformer.pipelines.tasks import task_for_checkpoint
from npformer.records import Source
from npformer.search import SparseVector, semantic_search

KINDS = {"sentence-embeddings": "dense", "sparse-embeddings": "sparse", "late-interaction": "per-token"}


def _corpus(args) -> list:
    """The corpus's usable records; those it cannot use are counted on stderr."""
    corpus = list(Source(args.corpus, [], args.column, args.delimiter))
    kept = [r for r in corpus if r.error is None]
    if not kept:
        raise UserError(f"the corpus {args.corpus} has no usable record" + (f" ({corpus[0].error})" if corpus else ""))
    if len(kept) < len(corpus):
        first = next(r.error for r in corpus if r.error)
        print(f"npformer: {len(corpus) - len(kept)} corpus records left out (first: {first})", file=sys.stderr)
    return kept


def pack(kind: str, vectors) -> np.ndarray | dict[str, np.ndarray]:
    """A corpus's vectors as saved (see the module docstring)."""
    if kind == "dense":
        return vectors
    if kind == "sparse":
        return {
            "indices": np.concatenate([v.indices for v in vectors]),
            "values": np.concatenate([v.values for v in vectors]),
            "lengths": np.array([v.indices.size for v in vectors], np.int64),
            "dim": np.array(vectors[0].dim),
        }
    return {"vectors": np.concatenate(vectors), "lengths": np.array([len(v) for v in vectors], np.int64)}


def unpack(kind: str, stored, path: str, rows: int):
    """The vectors :func:`pack` saved, checked against the model's kind and the corpus's size.
    Raises :class:`UserError` naming the file."""
    keys = {"dense": None, "sparse": {"indices", "values", "lengths", "dim"}, "per-token": {"vectors", "lengths"}}
    found = set(stored) if isinstance(stored, dict) else None
    if found != keys[kind] or kind == "dense" and stored.ndim != 2:
        raise UserError(
            f"--embeddings {path} does not hold {kind} vectors (the model's kind); embed this corpus "
            f"again with this model (--save-embeddings)"
        )
    count = len(stored) if kind == "dense" else len(stored["lengths"])
    if count != rows:
        raise UserError(
            f"--embeddings {path} has {count} rows but the corpus has {rows} records; embed this corpus again (--save-embeddings)"
        )
    if kind == "dense":
        return stored
    starts = np.concatenate([[0], np.cumsum(stored["lengths"])])
    if kind == "sparse":
        return [
            SparseVector(stored["indices"][a:b], stored["values"][a:b], int(stored["dim"]))
            for a, b in zip(starts[:-1], starts[1:])
        ]
    return [stored["vectors"][a:b] for a, b in zip(starts[:-1], starts[1:])]


def _encode(pipe, kind: str, texts: list[str], is_query: bool, max_length: int | None, progress: bool):
    if kind == "dense":
        return pipe.encode(texts, max_length=max_length, show_progress_bar=progress)
    if kind == "sparse":
        return pipe.encode(texts)
    return pipe.encode(texts, is_query=is_query)


def _hits(found: list[dict], kept: list) -> list[dict]:
    return [{**h, "text": kept[h["corpus_id"]].text, "line": kept[h["corpus_id"]].line} for h in found]


def _search(args):
    """Queries against a corpus embedded once (or read from --embeddings)."""
    task = task_for_checkpoint(resolve(args.model, args.revision)).name if args.model else "sentence-embeddings"
    kind = KINDS.get(task, "dense")
    kept = _corpus(args)
    stored = unpack(kind, load_array(args.embeddings, "--embeddings"), args.embeddings, len(kept)) if args.embeddings else None
    save = JsonLines(args.save_embeddings, args.overwrite, "--save-embeddings") if args.save_embeddings else None
    if save is not None:
        save.check([Path(args.corpus)])
    state = {"corpus": stored}
    args.column = args.query_column  # the queries' own column, if they come from a file

    def fn(pipe, records):
        progress = sys.stderr.isatty() and not args.quiet
        if state["corpus"] is None:
            state["corpus"] = _encode(pipe, kind, [r.text for r in kept], False, args.max_length, progress)
            if save is not None:
                save_array(save, pack(kind, state["corpus"]))
        queries = _encode(pipe, kind, _texts(records), True, args.max_length, False)
        if kind == "per-token":
            found = [
                [{"corpus_id": int(i), "score": float(row[i])} for i in np.argsort(-row, kind="stable")[: args.top_k]]
                for row in colbert_scores(queries, state["corpus"])
            ]
        else:  # dense rows by cosine similarity, sparse vectors by dot product
            found = semantic_search(queries, state["corpus"], top_k=args.top_k)
        return [{"query": r.text, "hits": _hits(f, kept)} for r, f in zip(records, found, strict=True)]

    return task if kind != "dense" else "sentence-embeddings", fn, ()


def _rerank(args):
    """Each query's corpus texts by a cross-encoder's score, best first."""
    kept = _corpus(args)
    args.column = args.query_column

    def fn(pipe, records):
        ranker = CrossEncoder.from_pipeline(pipe)
        documents = [r.text for r in kept]
        return [{"query": r.text, "hits": _hits(ranker.rank(r.text, documents, top_k=args.top_k), kept)} for r in records]

    return "text-classification", fn, ()


def _sparse_embed(args):
    def fn(pipe, records):
        texts = _texts(records)
        vectors = pipe(texts, max_active_dims=args.max_active_dims, max_length=args.max_length)
        return [{"text": t, "embedding": v.to_json()} for t, v in zip(texts, vectors, strict=True)]

    return "sparse-embeddings", fn, ()


def _colbert(args):
    def fn(pipe, records):
        texts = _texts(records)
        return [{"text": t, "embeddings": v} for t, v in zip(texts, pipe.encode(texts, is_query=args.queries), strict=True)]

    return "late-interaction", fn, ()


def _corpus_arguments(p, positive, top_k: int = 10) -> None:
    p.add_argument(
        "--corpus", required=True, help="the texts to search: .txt, .jsonl, .csv or .tsv (--column names its text column)"
    )
    p.add_argument("--query-column", help="the queries' column when they come from --input")
    _top_k(p, positive, top_k)


def _search_arguments(p, positive) -> None:
    _corpus_arguments(p, positive)
    p.add_argument(
        "--embeddings",
        help="the corpus vectors saved by --save-embeddings (.npy, or .npz for a sparse or late-interaction model)",
    )
    p.add_argument(
        "--save-embeddings",
        help="write the corpus vectors here for later runs (.npy; .npz for a sparse or late-interaction model)",
    )


for _command in (
    Command(
        "search",
        "sentence-embeddings",
        "find the corpus texts closest to each query: dense, sparse (SPLADE) or late-interaction (ColBERT) model",
        _search,
        _search_arguments,
    ),
    Command(
        "rerank",
        "text-classification",
        "order the corpus texts by a cross-encoder's score for each query",
        _rerank,
        lambda p, positive: _corpus_arguments(p, positive, None),
    ),
    Command(
        "sparse-embed",
        "sparse-embeddings",
        "SPLADE sparse vectors: [{index, value}] over the vocabulary",
        _sparse_embed,
        lambda p, positive: p.add_argument(
            "--max-active-dims", type=positive("--max-active-dims"), help="keep this many largest entries per vector"
        ),
        ("sparse-embeddings", "splade"),
    ),
    Command(
        "colbert",
        "late-interaction",
        "ColBERT per-token vectors (documents unless --queries)",
        _colbert,
        lambda p, positive: p.add_argument(
            "--queries", action="store_true", help="encode the texts as queries (marker, expansion to query_length)"
        ),
        ("late-interaction", "multi-vector"),
    ),
):
    register_command(_command)
