"""``"sparse-embeddings"`` (SPLADE: Formal et al. 2021; ``npformer.SparseEncoder`` is its
sentence-transformers surface): a masked-LM's logits over the vocabulary, ``log(1 + relu(logit))``
per token (twice with the ``log1p_relu`` activation), max (or sum) over a text's tokens; most
entries are 0.

Reads sentence-transformers' ``SparseEncoder`` checkpoints (``modules.json``: ``MLMTransformer`` then
``SpladePooling``, whose ``pooling_strategy`` and ``activation_function`` it keeps) and plain
``*ForMaskedLM`` checkpoints (max pooling, relu). The pooling is fused into the masked-LM head:
each batch's token states go through the vocabulary product ``CHUNK_ROWS`` rows at a time and are
folded into the pooled vector at once, so the ``(batch, seq, vocab)`` logits (500 MB for 32 x 128
tokens on a 30k vocabulary) never exist. Reference: sentence-transformers 5.3's ``SpladePooling``
and ``SparseEncoder.encode`` / ``decode`` / ``similarity`` (dot product).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from npformer.files import read_json
from npformer.models.auto import AutoModelForMaskedLM
from npformer.pipelines.base import Pipeline, check_texts, load_tokenizer
from npformer.search import SparseVector, is_sparse, sparse_dot
from npformer.weights import Weights

CHUNK_ROWS = 64  # token rows per vocabulary product: 64 x 30,522 float32 = 7.8 MB
MLM_MODULE = "sentence_transformers.sparse_encoder.models.MLMTransformer"
SPLADE_MODULE = "sentence_transformers.sparse_encoder.models.SpladePooling"
STATIC_MODULE = "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding.SparseStaticEmbedding"
ROUTER_MODULE = "sentence_transformers.models.Router"


@dataclass(frozen=True)
class SpladeLayout:
    """Where a SPLADE checkpoint keeps its parts: the masked LM's directory (``mlm_dir``), the
    pooling (``pooling_strategy``, ``activation_function``), ``max_seq_length`` (or None) and, for an
    inference-free model, the directory of the queries' ``SparseStaticEmbedding`` (``static_dir``:
    one weight per vocabulary entry, its own tokenizer), else None."""

    mlm_dir: Path
    pooling_strategy: str = "max"
    activation_function: str = "relu"
    max_seq_length: int | None = None
    static_dir: Path | None = None

    @classmethod
    def read(cls, directory: Path) -> "SpladeLayout":
        """The layout of ``directory``: no ``modules.json`` (a plain masked LM), ``MLMTransformer``
        then ``SpladePooling``, or a ``Router`` whose document route is those two and whose query
        route is the same or a ``SparseStaticEmbedding``. Raises ``ValueError`` naming the file for
        a module npformer does not run."""
        directory = Path(directory)
        modules_file = directory / "modules.json"
        if not modules_file.is_file():
            return cls(directory)
        modules = read_json(modules_file)
        types = (
            [m.get("type") for m in modules] if isinstance(modules, list) and all(isinstance(m, dict) for m in modules) else None
        )
        if types == [ROUTER_MODULE]:
            return cls._routed(directory / str(modules[0].get("path", "")))
        if types != [MLM_MODULE, SPLADE_MODULE]:
            raise ValueError(
                f"{modules_file}: npformer's SparseEncoder runs MLMTransformer then SpladePooling (or a "
                f"Router with a SparseStaticEmbedding query route); this checkpoint has {types}"
            )
        return cls._splade(directory / str(modules[0].get("path", "")), directory / str(modules[1].get("path", "")))

    @classmethod
    def _splade(cls, mlm_dir: Path, pooling_dir: Path, static_dir: Path | None = None) -> "SpladeLayout":
        pooling = read_json(pooling_dir / "config.json")
        strategy, activation = pooling.get("pooling_strategy", "max"), pooling.get("activation_function", "relu")
        if strategy not in ("max", "sum") or activation not in ("relu", "log1p_relu"):
            raise ValueError(
                f"{pooling_dir / 'config.json'}: pooling {strategy!r} with activation {activation!r}; "
                "SpladePooling has max or sum, relu or log1p_relu"
            )
        settings_file = mlm_dir / "sentence_bert_config.json"
        settings = read_json(settings_file) if settings_file.is_file() else {}
        return cls(mlm_dir, strategy, activation, settings.get("max_seq_length"), static_dir)

    @classmethod
    def _routed(cls, directory: Path) -> "SpladeLayout":
        config_file = directory / "router_config.json"
        config = read_json(config_file)
        structure = config.get("structure") if isinstance(config, dict) else None
        types = config.get("types", {}) if isinstance(config, dict) else {}
        routes = {route: [types.get(name, name) for name in names] for route, names in (structure or {}).items()}
        document, query = routes.get("document"), routes.get("query")
        splade = [f"{MLM_MODULE}.MLMTransformer", f"{SPLADE_MODULE}.SpladePooling"]
        if document != splade or query not in (splade, [STATIC_MODULE]):
            raise ValueError(
                f"{config_file}: npformer's SparseEncoder runs a document route MLMTransformer, "
                f"SpladePooling and a query route the same or SparseStaticEmbedding; this checkpoint has "
                f"{routes}"
            )
        static = directory / structure["query"][0] if query == [STATIC_MODULE] else None
        return cls._splade(directory / structure["document"][0], directory / structure["document"][1], static)


class SpladeModel:
    """The loader of ``"sparse-embeddings"``: the masked LM of a SPLADE checkpoint (see
    :class:`SpladeLayout`)."""

    @staticmethod
    def from_pretrained(directory, *, dtype: str = "float32", adapter=None, backend: str = "numba"):
        """The checkpoint's masked LM (:class:`~npformer.models.auto.AutoModelForMaskedLM`'s arguments)."""
        return AutoModelForMaskedLM.from_pretrained(
            SpladeLayout.read(directory).mlm_dir, dtype=dtype, adapter=adapter, backend=backend
        )

    @staticmethod
    def tokenizer_directory(directory) -> Path:
        """Where the documents' tokenizer is: beside the masked LM."""
        return SpladeLayout.read(directory).mlm_dir

    head = AutoModelForMaskedLM.head


class SparseEmbeddingPipeline(Pipeline):
    """``"sparse-embeddings"``: SPLADE vectors of texts (see the module docstring).

    ``pipe(texts, max_active_dims=, truncation=True, max_length=)`` -> a :class:`SparseVector` per
    text (one for a str); ``encode`` / ``encode_query`` / ``encode_document`` / ``decode`` /
    ``similarity`` as sentence-transformers' ``SparseEncoder``. Raises ``ValueError`` naming the
    file for a checkpoint whose modules npformer does not run.
    """

    task = "sparse-embeddings"

    def __init__(self, model, tokenizer, *, max_active_dims: int | None = None, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        layout = SpladeLayout.read(self.model_dir) if self.model_dir is not None else SpladeLayout(Path("."))
        self.pooling_strategy, self.activation_function = layout.pooling_strategy, layout.activation_function
        self.max_seq_length = min(layout.max_seq_length or self.max_length, self.max_length)
        self.max_active_dims = max_active_dims
        self.vocab_size = self.model.config.vocab_size
        self.static_weight = self.static_tokenizer = None  # an inference-free model's query encoder
        if layout.static_dir is not None:
            self.static_tokenizer = load_tokenizer(layout.static_dir)
            self.static_weight = Weights(layout.static_dir).get("weight", (self.vocab_size,))

    def __call__(self, inputs, *, max_active_dims: int | None = None, truncation: bool = True, max_length: int | None = None):
        texts, single = check_texts(inputs, allow_empty=True)
        encodings = self.encode_one_window(
            [(t, None) for t in texts], truncation, max_length if max_length is not None else self.max_seq_length
        )
        vectors = self.vectors(encodings, max_active_dims)
        return vectors[0] if single else vectors

    def vectors(self, encodings, max_active_dims: int | None = None, batch_size: int | None = None) -> list:
        """A :class:`SparseVector` per encoding, in order (the forward passes go to the runner)."""
        rows = self.forward(encodings, self.pooled, batch_size=batch_size)
        limit = max_active_dims if max_active_dims is not None else self.max_active_dims
        return [SparseVector.from_dense(r, limit) for r in rows]

    def pooled(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """``(batch, vocab_size)`` float32 SPLADE vectors of one padded batch."""
        hidden = self.model.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state
        batch, seq, width = hidden.shape
        rows = np.flatnonzero(attention_mask.reshape(-1))  # the real tokens, batch-major
        owner = rows // seq
        out = np.zeros((batch, self.vocab_size), np.float32)
        for start in range(0, rows.size, CHUNK_ROWS):
            take = rows[start : start + CHUNK_ROWS]
            weights = np.log1p(np.maximum(self.model.decode(self.model.transform(hidden.reshape(-1, width)[take])), 0))
            if self.activation_function == "log1p_relu":
                weights = np.log1p(weights)
            for b in np.unique(owner[start : start + CHUNK_ROWS]):
                mine = weights[owner[start : start + CHUNK_ROWS] == b]
                if self.pooling_strategy == "max":
                    np.maximum(out[b], mine.max(axis=0), out=out[b])
                else:
                    out[b] += mine.sum(axis=0)
        return out

    def encode(
        self, sentences, batch_size: int | None = None, max_active_dims: int | None = None, convert_to_dense: bool = False
    ):
        """Sparse vectors of ``sentences`` (a str or a list of str): a :class:`SparseVector` per
        text (one for a str), or with ``convert_to_dense`` a ``(n, vocab_size)`` float32 array
        (``(vocab_size,)`` for a str). Texts are cut to ``max_seq_length`` tokens."""
        texts, single = check_texts(sentences, allow_empty=True)
        encodings = self.encode_one_window([(t, None) for t in texts], True, self.max_seq_length)
        vectors = self.vectors(encodings, max_active_dims, batch_size)
        if convert_to_dense:
            dense = _dense_set(vectors, self.vocab_size)
            return dense[0] if single else dense
        return vectors[0] if single else vectors

    def encode_query(
        self, sentences, batch_size: int | None = None, max_active_dims: int | None = None, convert_to_dense: bool = False
    ):
        """:meth:`encode` for queries: by the ``SparseStaticEmbedding`` of an inference-free model
        (each token of the query, special tokens not added, weighs its static weight), else the
        same as :meth:`encode`."""
        if self.static_weight is None:
            return self.encode(sentences, batch_size, max_active_dims, convert_to_dense)
        texts, single = check_texts(sentences, allow_empty=True)
        limit = max_active_dims if max_active_dims is not None else self.max_active_dims
        vectors = []
        for text in texts:
            ids = self.static_tokenizer.pieces(text, self.static_tokenizer.model_max_length).ids
            present = np.zeros(self.vocab_size, np.float32)
            present[np.asarray(ids, np.int64)] = 1
            vectors.append(SparseVector.from_dense(present * self.static_weight, limit))
        if convert_to_dense:
            dense = _dense_set(vectors, self.vocab_size)
            return dense[0] if single else dense
        return vectors[0] if single else vectors

    encode_document = encode

    def decode(self, embeddings, top_k: int | None = None):
        """``[(token, weight), ...]`` by decreasing weight (the ``top_k`` first) of a
        :class:`SparseVector` or a dense ``(vocab_size,)`` row; a list (or a 2-D array) gives one
        list per vector."""
        if isinstance(embeddings, SparseVector) or isinstance(embeddings, np.ndarray) and embeddings.ndim == 1:
            vector = embeddings if isinstance(embeddings, SparseVector) else SparseVector.from_dense(embeddings)
            order = np.argsort(-vector.values, kind="stable")[:top_k]
            tokens = self.tokenizer.convert_ids_to_tokens([int(i) for i in vector.indices[order]])
            return [(t, float(v)) for t, v in zip(tokens, vector.values[order])]
        return [self.decode(e, top_k) for e in embeddings]

    def similarity(self, a, b) -> np.ndarray:
        """``(n, m)`` float32 dot products of two sets of vectors (:class:`SparseVector` lists or
        dense arrays; one vector counts as a set of one). Two sparse sets are multiplied without
        making either dense (:func:`sparse_dot`)."""
        if is_sparse(a) and is_sparse(b):
            return sparse_dot([a] if isinstance(a, SparseVector) else a, [b] if isinstance(b, SparseVector) else b)
        return _dense_set(a, self.vocab_size) @ _dense_set(b, self.vocab_size).T


def _dense_set(vectors, dim: int) -> np.ndarray:
    if isinstance(vectors, SparseVector):
        return vectors.dense()[None]
    if isinstance(vectors, np.ndarray):
        return np.atleast_2d(vectors).astype(np.float32)
    rows: Sequence[SparseVector] = list(vectors)
    out = np.zeros((len(rows), dim), np.float32)
    for i, v in enumerate(rows):
        out[i, v.indices] = v.values
    return out
