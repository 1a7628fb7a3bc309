"""``"late-interaction"`` (ColBERT: Khattab & Zaharia 2020; ``npformer.ColBERT`` is PyLate's
``models.ColBERT`` surface over it): a
text becomes one vector per token (the encoder's token states through linear projections, e.g.
to 128 dimensions, each L2-normalized), and a query scores a document by MaxSim: the sum over
the query's vectors of their largest dot product with the document's.

Reads PyLate checkpoints (``modules.json``: sentence-transformers' ``Transformer`` then PyLate's or
sentence-transformers' ``Dense`` modules; ``config_sentence_transformers.json``: ``query_prefix``
and ``document_prefix`` (marker tokens put after ``[CLS]``), ``query_length`` and
``document_length`` (tokens, marker included), ``do_query_expansion`` (queries padded to
``query_length`` with ``[MASK]``, whose vectors are kept), ``attend_to_expansion_tokens``,
``skiplist_words`` (tokens whose vectors a document drops: punctuation)). Reference: PyLate 1.6's
``ColBERT.tokenize`` / ``encode``, ``scores.colbert_scores`` and ``rank.rerank``.

One difference, on purpose: PyLate's ``rerank`` pads a query's candidate documents to the longest
with zero vectors, so a document's score there can depend on the documents beside it (a padding
vector's 0 beats a negative similarity). Here a document is scored over its own vectors only, as
PyLate's ``colbert_scores`` scores one query-document pair.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import numpy as np

from npformer.files import read_json
from npformer.models.auto import AutoModel
from npformer.models.pooling import l2_normalize
from npformer.pipelines.base import Pipeline, check_texts
from npformer.weights import Weights

TRANSFORMER = "sentence_transformers.models.Transformer"
DENSE = ("pylate.models.Dense.Dense", "sentence_transformers.models.Dense")
PYLATE_MODULES = ("pylate.models.Dense.Dense",)  # a checkpoint with one is a ColBERT model
ACTIVATIONS = {"torch.nn.modules.linear.Identity": lambda x: x, "torch.nn.modules.activation.Tanh": np.tanh}
INT8_SCALE = 127.0  # int8 storage: a unit vector's components times 127, rounded
DEFAULTS = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
}


@dataclasses.dataclass(frozen=True)
class Dense:
    """One projection of the token vectors: ``activation(x @ weight.T + bias)``, plus ``x`` (or
    ``x @ residual.T`` when the widths differ) with ``use_residual``, as PyLate's ``Dense``."""

    weight: np.ndarray  # (out_features, in_features) float32
    bias: np.ndarray | None
    activation: object
    residual: np.ndarray | None
    use_residual: bool

    @classmethod
    def from_pretrained(cls, directory: Path) -> "Dense":
        """Read ``config.json`` and ``model.safetensors`` of a ``Dense`` module's directory. Raises
        ``ValueError`` naming the file for an activation npformer does not apply."""
        config = read_json(directory / "config.json")
        if (
            not isinstance(config, dict)
            or not isinstance(config.get("in_features"), int)
            or not isinstance(config.get("out_features"), int)
        ):
            raise ValueError(f"{directory / 'config.json'}: a Dense module names in_features and out_features")
        activation = config.get("activation_function", "torch.nn.modules.linear.Identity")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"{directory / 'config.json'}: activation_function {activation!r} is not one npformer "
                f"applies ({', '.join(ACTIVATIONS)})"
            )
        weights = Weights(directory)
        shape = (config["out_features"], config["in_features"])
        use_residual = bool(config.get("use_residual", False))
        residual = weights.get("residual.weight", shape) if use_residual and shape[0] != shape[1] else None
        bias = weights.get("linear.bias", (shape[0],)) if config.get("bias", True) else None
        return cls(weights.get("linear.weight", shape), bias, ACTIVATIONS[activation], residual, use_residual)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = x @ self.weight.T
        if self.bias is not None:
            out += self.bias
        out = self.activation(out)
        if self.use_residual:
            out = out + (x if self.residual is None else x @ self.residual.T)
        return out.astype(np.float32, copy=False)


def _module_list(directory: Path) -> list[dict]:
    """``modules.json`` of a PyLate checkpoint, checked: a Transformer, then Dense modules. Raises
    ``ValueError`` naming the file for a module npformer does not run."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        raise ValueError(
            f"{directory}: no modules.json; a ColBERT checkpoint is saved by PyLate "
            "(a Transformer module, then Dense projections)"
        )
    modules = read_json(modules_file)
    types = [m.get("type") for m in modules] if isinstance(modules, list) and all(isinstance(m, dict) for m in modules) else None
    if not types or types[0] != TRANSFORMER or len(types) < 2 or any(t not in DENSE for t in types[1:]):
        raise ValueError(f"{modules_file}: npformer's ColBERT runs a Transformer then Dense modules; this checkpoint has {types}")
    return modules


def _modules(directory: Path) -> tuple[Path, list[Dense], dict, bool]:
    """``(encoder directory, projections, settings, do_lower_case)`` of a PyLate checkpoint. Raises
    ``ValueError`` as :func:`_module_list`, and naming ``config_sentence_transformers.json`` for a
    setting of the wrong type."""
    modules = _module_list(directory)
    encoder_dir = directory / str(modules[0].get("path", ""))
    projections = [Dense.from_pretrained(directory / str(m.get("path", ""))) for m in modules[1:]]
    settings_file = directory / "config_sentence_transformers.json"
    raw = read_json(settings_file) if settings_file.is_file() else {}
    settings = (
        {key: raw.get(key, default) if raw.get(key) is not None else default for key, default in DEFAULTS.items()}
        if isinstance(raw, dict)
        else None
    )
    if (
        settings is None
        or any(not isinstance(settings[k], type(DEFAULTS[k])) for k in DEFAULTS)
        or min(settings["query_length"], settings["document_length"]) < 2
    ):
        raise ValueError(f"{settings_file}: a setting has the wrong type ({', '.join(DEFAULTS)}; lengths >= 2)")
    bert_config = encoder_dir / "sentence_bert_config.json"
    lower = read_json(bert_config).get("do_lower_case", False) if bert_config.is_file() else False
    return encoder_dir, projections, settings, bool(lower)


def encoder_directory(directory: Path) -> Path:
    """The directory of a PyLate checkpoint's ``Transformer`` module (its weights and tokenizer)."""
    return Path(directory) / str(_module_list(Path(directory))[0].get("path", ""))


class ColBERTModel:
    """The loader of ``"late-interaction"``: the encoder of a PyLate checkpoint (its ``Transformer``
    module's directory), after checking that npformer runs its modules."""

    @staticmethod
    def from_pretrained(directory, *, dtype: str = "float32", adapter=None, backend: str = "numba"):
        """The checkpoint's encoder (:meth:`npformer.AutoModel.from_pretrained`'s arguments).
        Raises ``ValueError`` as the pipeline does for a checkpoint npformer does not run."""
        return AutoModel.from_pretrained(encoder_directory(directory), dtype=dtype, adapter=adapter, backend=backend)

    tokenizer_directory = staticmethod(encoder_directory)


class LateInteractionPipeline(Pipeline):
    """``"late-interaction"``: per-token vectors of texts and MaxSim scores (see the module docstring).

    ``pipe(texts, is_query=False)`` -> a ``(tokens, embedding_size)`` float32 array per text (one
    for a str), as :meth:`encode`. Attributes ``query_prefix``, ``document_prefix``,
    ``query_length``, ``document_length``, ``do_query_expansion``, ``attend_to_expansion_tokens``,
    ``skiplist_words`` are PyLate's, read from the checkpoint. Raises ``ValueError`` naming the
    file for a checkpoint npformer does not run.
    """

    task = "late-interaction"

    def __init__(self, model, tokenizer, *, query_length: int | None = None, document_length: int | None = None, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        if self.model_dir is None:
            raise ValueError("a ColBERT pipeline reads its projections from the checkpoint: load it from its directory")
        _, self.projections, settings, self.do_lower_case = _modules(Path(self.model_dir))
        for key, value in settings.items():
            setattr(self, key, value)
        self.query_length = query_length or self.query_length
        self.document_length = document_length or self.document_length
        if not self.do_query_expansion:
            self.attend_to_expansion_tokens = False
        tok = self.tokenizer
        self.query_prefix_id = tok.convert_tokens_to_ids(self.query_prefix) if self.query_prefix else None
        self.document_prefix_id = tok.convert_tokens_to_ids(self.document_prefix) if self.document_prefix else None
        # PyLate pads queries with the mask token (the padding token without one)
        self.expansion_id = tok.mask_token_id if tok.mask_token_id is not None else tok.pad_token_id
        self.skiplist = set(tok.convert_tokens_to_ids(list(self.skiplist_words)))
        self.embedding_size = self.projections[-1].weight.shape[0]

    @property
    def config(self):
        return self.model.config

    def __call__(self, inputs, *, is_query: bool = False):
        return self.encode(inputs, is_query=is_query)

    def tokenize(self, texts: list[str], is_query: bool) -> list:
        """One :class:`~npformer.tokenizer.Encoding` per text as PyLate's ``tokenize`` makes it: cut to
        the length minus the marker, the marker put after the first token, a query padded to
        ``query_length`` with the expansion token (attended when ``attend_to_expansion_tokens``)."""
        length = self.query_length if is_query else self.document_length
        prefix = self.query_prefix_id if is_query else self.document_prefix_id
        limit = length - 1 if prefix is not None else length
        prepared = [(t.strip().lower() if self.do_lower_case else t.strip(), None) for t in texts]
        encodings = self.tokenizer.encode_batch(prepared, truncation="longest_first", max_length=limit, overflow=False)
        out = []
        for enc in encodings:
            ids, mask = list(enc.ids), [1] * len(enc)
            if is_query and self.do_query_expansion:
                grow = limit - len(ids)
                ids, mask = ids + [self.expansion_id] * grow, mask + [int(self.attend_to_expansion_tokens)] * grow
            if prefix is not None:
                ids, mask = ids[:1] + [prefix] + ids[1:], mask[:1] + [1] + mask[1:]
            out.append(dataclasses.replace(enc, ids=ids, attention_mask=mask, type_ids=[0] * len(ids)))
        return out

    def project(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """``(batch, seq, embedding_size)`` float32 projected token vectors of one padded batch."""
        hidden = self.model(input_ids, attention_mask, token_type_ids).last_hidden_state
        for dense in self.projections:
            hidden = dense(hidden)
        return hidden

    def encode(
        self,
        sentences,
        *,
        is_query: bool = True,
        batch_size: int | None = None,  # noqa: PLR0913
        normalize_embeddings: bool = True,
        precision: str = "float32",
        show_progress_bar=None,
    ):
        """Per-token vectors of ``sentences`` (a str or a list of str): for each text a
        ``(tokens, embedding_size)`` array (one for a str). A query keeps every position (with its
        expansion tokens: ``query_length`` rows); a document drops padding and its skiplist tokens.

        ``precision="int8"`` stores each (normalized) component as ``round(127 x)`` in int8, a
        quarter of the memory; :func:`colbert_scores` takes either. Raises ``ValueError`` for a
        non-str text, an unknown precision, or int8 without normalization."""
        if precision not in ("float32", "int8"):
            raise ValueError(f"precision must be 'float32' or 'int8', got {precision!r}")
        if precision == "int8" and not normalize_embeddings:
            raise ValueError("precision='int8' stores normalized vectors; pass normalize_embeddings=True")
        texts, single = check_texts(sentences, allow_empty=True)
        encodings = self.tokenize(texts, is_query)
        rows = self.forward(encodings, self.project, per_token=True, batch_size=batch_size)
        out = []
        for enc, vectors in zip(encodings, rows):
            if not (is_query and self.do_query_expansion):
                keep = [m == 1 and (is_query or i not in self.skiplist) for i, m in zip(enc.ids, enc.attention_mask)]
                vectors = vectors[np.asarray(keep, bool)]
            vectors = l2_normalize(vectors) if normalize_embeddings else vectors
            out.append(np.rint(vectors * INT8_SCALE).astype(np.int8) if precision == "int8" else vectors)
        return out[0] if single else out

    def encode_query(self, sentences, **kwargs):
        """:meth:`encode` with ``is_query=True``."""
        return self.encode(sentences, is_query=True, **kwargs)

    def encode_document(self, sentences, **kwargs):
        """:meth:`encode` with ``is_query=False``."""
        return self.encode(sentences, is_query=False, **kwargs)

    def rank(
        self,
        query: str,
        documents: list[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int | None = None,
    ) -> list[dict]:
        """The documents by decreasing MaxSim score for ``query``: ``[{"corpus_id", "score"}, ...]``
        (with ``"text"`` when ``return_documents``), the ``top_k`` first (all by default), as
        sentence-transformers' ``CrossEncoder.rank``. Raises ``ValueError`` as :meth:`encode`."""
        texts, _ = check_texts(documents, "documents", allow_empty=True)
        scores = colbert_scores([self.encode(query, is_query=True)], self.encode(texts, is_query=False, batch_size=batch_size))[0]
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [
            {"corpus_id": int(i), "score": float(scores[i]), **({"text": texts[i]} if return_documents else {})} for i in order
        ]


def _as_float(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.dtype == np.int8:
        return vectors.astype(np.float32) / np.float32(INT8_SCALE)
    return vectors.astype(np.float32, copy=False)


def colbert_scores(queries_embeddings, documents_embeddings) -> np.ndarray:
    """``(n_queries, n_documents)`` float32 MaxSim scores: for each pair, the sum over the query's
    vectors of the largest dot product with one of the document's (PyLate's ``colbert_scores`` on
    one pair). Each argument is a list (or a stacked 3-D array) of ``(tokens, dim)`` arrays, float32
    or int8 from ``encode(precision="int8")``. Raises ``ValueError`` for a document without
    vectors or mismatched widths."""
    queries = [_as_float(q) for q in queries_embeddings]
    documents = [_as_float(d) for d in documents_embeddings]
    if not documents or not queries:
        return np.zeros((len(queries), len(documents)), np.float32)
    empty = next((i for i, d in enumerate(documents) if d.ndim != 2 or len(d) == 0), None)
    if empty is not None:
        raise ValueError(f"document {empty} has no token vectors (a (tokens, dim) array is needed)")
    widths = {a.shape[-1] for a in queries + documents}
    if len(widths) != 1:
        raise ValueError(f"the vectors have different widths {sorted(widths)}")
    starts = np.cumsum([0] + [len(d) for d in documents[:-1]])
    stacked = np.concatenate(documents)
    out = np.empty((len(queries), len(documents)), np.float32)
    for row, query in enumerate(queries):
        out[row] = np.maximum.reduceat(query @ stacked.T, starts, axis=1).sum(axis=0)
    return out


def rerank(documents_ids, queries_embeddings, documents_embeddings) -> list[list[dict]]:
    """PyLate's ``rank.rerank``: for each query its candidates ``[{"id", "score"}, ...]`` by
    decreasing MaxSim. ``documents_ids[i]`` and ``documents_embeddings[i]`` list query ``i``'s
    candidates and their vectors."""
    results = []
    for query, ids, documents in zip(queries_embeddings, documents_ids, documents_embeddings):
        scores = colbert_scores([query], documents)[0]
        order = np.argsort(-scores, kind="stable")
        results.append([{"id": ids[i], "score": float(scores[i])} for i in order])
    return results
