"""Similarity and search over sentence embeddings, with sentence-transformers' names and outputs
(``sentence_transformers.util.cos_sim`` / ``semantic_search`` and
``sentence_transformers.quantization.quantize_embeddings``), in NumPy; sparse (SPLADE) vectors
(:class:`SparseVector`) too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from npformer.models.pooling import l2_normalize

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


@dataclass(frozen=True)
class SparseVector:
    """One sparse embedding: ``indices`` (nnz,) int64 vocabulary ids, ascending; ``values`` (nnz,)
    float32, each > 0; ``dim`` the vocabulary size."""

    indices: np.ndarray
    values: np.ndarray
    dim: int

    def dense(self) -> np.ndarray:
        """The ``(dim,)`` float32 vector."""
        out = np.zeros(self.dim, np.float32)
        out[self.indices] = self.values
        return out

    @classmethod
    def from_dense(cls, row: np.ndarray, max_active_dims: int | None = None) -> "SparseVector":
        """The nonzero entries of ``row``; with ``max_active_dims``, only that many largest (by
        absolute value, as sentence-transformers' ``select_max_active_dims``)."""
        if max_active_dims is not None and max_active_dims < row.size:
            keep = np.argpartition(-np.abs(row), max_active_dims - 1)[:max_active_dims]
            row = np.where(np.isin(np.arange(row.size), keep), row, np.float32(0))
        indices = np.flatnonzero(row)
        return cls(indices.astype(np.int64), row[indices].astype(np.float32), int(row.size))

    def to_json(self) -> list[dict]:
        """TEI's ``/embed_sparse`` shape: ``[{"index", "value"}, ...]`` by ascending index."""
        return [{"index": int(i), "value": float(v)} for i, v in zip(self.indices, self.values)]


def sparse_dot(queries: Sequence[SparseVector], corpus: Sequence[SparseVector]) -> np.ndarray:
    """``(len(queries), len(corpus))`` float32 dot products; memory: the corpus's nonzero entries
    once more and one dense query row (the vocabulary size), never a dense corpus."""
    out = np.zeros((len(queries), len(corpus)), np.float32)
    if not corpus or not queries:
        return out
    indices = np.concatenate([v.indices for v in corpus])
    values = np.concatenate([v.values for v in corpus]).astype(np.float64)
    owner = np.repeat(np.arange(len(corpus)), [v.indices.size for v in corpus])
    for row, query in enumerate(queries):
        out[row] = np.bincount(owner, weights=query.dense()[indices] * values, minlength=len(corpus))
    return out


def similarity(a, b) -> np.ndarray:
    """Cosine similarity of every row of ``a (n, dim)`` with every row of ``b (m, dim)`` (1-D inputs
    are one row): ``(n, m) float32``, as sentence-transformers' ``cos_sim`` / ``model.similarity``."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float32)), np.atleast_2d(np.asarray(b, dtype=np.float32))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings of different sizes: {a.shape[1]} and {b.shape[1]}")
    return (l2_normalize(a) @ l2_normalize(b).T).astype(np.float32)


def similarity_function(name: str):
    """sentence-transformers' ``SimilarityFunction`` by name: ``cosine`` (:func:`similarity`), ``dot``
    (dot product), ``euclidean`` / ``manhattan`` (the negative L2 / L1 distance); each takes
    ``(n, dim)`` and ``(m, dim)`` and returns ``(n, m) float32``. Raises ``ValueError`` for another name."""

    def pairs(a, b):
        a, b = np.atleast_2d(np.asarray(a, dtype=np.float32)), np.atleast_2d(np.asarray(b, dtype=np.float32))
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"embeddings of different sizes: {a.shape[1]} and {b.shape[1]}")
        return a, b

    def dot(a, b):
        a, b = pairs(a, b)
        return (a @ b.T).astype(np.float32)

    def distance(order):
        def negative(a, b):
            a, b = pairs(a, b)
            return (-np.linalg.norm(a[:, None, :] - b[None, :, :], ord=order, axis=-1)).astype(np.float32)

        return negative

    table = {"cosine": similarity, "dot": dot, "euclidean": distance(2), "manhattan": distance(1)}
    if name not in table:
        raise ValueError(f"unknown similarity function {name!r}; use one of {sorted(table)}")
    return table[name]


def is_sparse(vectors) -> bool:
    """Whether ``vectors`` is a :class:`SparseVector` or a non-empty list of them."""
    return (
        isinstance(vectors, SparseVector)
        or isinstance(vectors, (list, tuple))
        and bool(vectors)
        and all(isinstance(v, SparseVector) for v in vectors)
    )


def semantic_search(
    query_embeddings,
    corpus_embeddings,
    top_k: int = 10,
    query_chunk_size: int = 100,  # noqa: PLR0913
    corpus_chunk_size: int = 500_000,
    score_function=similarity,
) -> list[list[dict]]:
    """For each query, the ``top_k`` corpus entries by ``score_function`` (cosine similarity), best
    first: ``[[{"corpus_id": int, "score": float}, ...], ...]`` (one list per query, also for a
    single 1-D query), as sentence-transformers' ``util.semantic_search``. Equal scores keep corpus
    order.

    Scores are computed for ``query_chunk_size`` queries against ``corpus_chunk_size`` corpus rows at
    a time, keeping only each chunk's best ``top_k``, so memory holds one chunk's score matrix
    (``query_chunk_size x corpus_chunk_size`` float32), not ``n_queries x n_corpus``.

    Args:
        query_embeddings: ``(n_queries, dim)`` or ``(dim,)`` float.
        corpus_embeddings: ``(n_corpus, dim)`` float.
        top_k: hits per query (at most the corpus size).
        query_chunk_size: queries per chunk (a positive integer).
        corpus_chunk_size: corpus rows per chunk (a positive integer).
        score_function: ``(a (n, dim), b (m, dim)) -> (n, m)`` scores, higher is closer. Lists of
            :class:`SparseVector` are scored by :func:`sparse_dot` (dot product, as
            sentence-transformers' ``SparseEncoder``) unless another function is given.

    Raises ``ValueError`` for ``top_k`` or a chunk size below 1, or embeddings of different sizes.
    """
    for name, value in (("top_k", top_k), ("query_chunk_size", query_chunk_size), ("corpus_chunk_size", corpus_chunk_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if is_sparse(corpus_embeddings):  # SPLADE vectors: dot products, never a dense corpus
        queries = [query_embeddings] if isinstance(query_embeddings, SparseVector) else list(query_embeddings)
        corpus = [corpus_embeddings] if isinstance(corpus_embeddings, SparseVector) else list(corpus_embeddings)
        if not is_sparse(queries):
            raise ValueError("a sparse corpus is searched with sparse queries (SparseVector)")
        score_function = sparse_dot if score_function is similarity else score_function
    else:
        queries = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
        corpus = np.atleast_2d(np.asarray(corpus_embeddings, dtype=np.float32))
    out = []
    for q in range(0, len(queries), query_chunk_size):
        best_ids, best_scores = [], []  # per corpus chunk: (queries, <= top_k)
        for c in range(0, len(corpus), corpus_chunk_size):
            scores = score_function(queries[q : q + query_chunk_size], corpus[c : c + corpus_chunk_size])
            keep = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
            best_ids.append(keep + c)
            best_scores.append(np.take_along_axis(scores, keep, axis=1))
        ids, scores = np.concatenate(best_ids, axis=1), np.concatenate(best_scores, axis=1)
        for row_ids, row_scores in zip(ids, scores):
            order = np.argsort(-row_scores, kind="stable")[:top_k]  # chunks are in corpus order: ties stay so
            out.append([{"corpus_id": int(row_ids[i]), "score": float(row_scores[i])} for i in order])
    return out


def quantize_embeddings(
    embeddings, precision: str, ranges: np.ndarray | None = None, calibration_embeddings: np.ndarray | None = None
):
    """Embeddings in a smaller type, by sentence-transformers' rules (``quantize_embeddings``):

    * ``"float32"``: as they are;
    * ``"int8"`` / ``"uint8"``: per dimension, 256 buckets between the minimum and maximum of
      ``ranges`` ``(2, dim)`` (else of ``calibration_embeddings``, else of ``embeddings`` themselves):
      ``(x - min) / step`` truncated (``- 128`` for int8); values outside the ranges go to the end
      buckets and a dimension whose range is empty to its lowest (where sentence-transformers' casts
      overflow or divide by zero);
    * ``"binary"`` / ``"ubinary"``: one bit per dimension (``x > 0``), packed 8 to a byte
      (``(n, ceil(dim / 8))``), as int8 shifted by -128 / as uint8.

    ``embeddings`` is ``(n, dim)`` float, or a list of such arrays (token embeddings), which are
    quantized together and split again. Raises ``ValueError`` for an unknown precision or integer input.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    lengths = None
    if isinstance(embeddings, list):
        lengths = [len(e) for e in embeddings]
        embeddings = np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float32)
    embeddings = np.asarray(embeddings)
    if embeddings.dtype.kind not in "f":
        raise ValueError(f"embeddings to quantize must be float, got {embeddings.dtype}")
    if precision == "float32":
        out = embeddings.astype(np.float32)
    elif precision.endswith("int8"):
        if ranges is None:
            source = embeddings if calibration_embeddings is None else np.asarray(calibration_embeddings)
            ranges = np.vstack((source.min(axis=0), source.max(axis=0)))
        starts = ranges[0]
        steps = (ranges[1] - ranges[0]) / 255
        steps = np.where(steps > 0, steps, 1.0)
        buckets = np.clip((embeddings - starts) / steps, 0, 255)  # values outside the ranges: the end buckets
        out = buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    else:
        packed = np.packbits(embeddings > 0, axis=-1)
        out = packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    if lengths is not None:
        return np.split(out, np.cumsum(lengths)[:-1])
    return out
