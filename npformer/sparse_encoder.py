"""``npformer.SparseEncoder``: sentence-transformers' ``SparseEncoder`` surface over the
``"sparse-embeddings"`` pipeline (:mod:`npformer.pipelines.sparse`: SPLADE, Formal et al. 2021)."""

from __future__ import annotations

from npformer.hub import resolve
from npformer.pipelines.base import load_tokenizer
from npformer.pipelines.sparse import SparseEmbeddingPipeline, SpladeModel
from npformer.search import SparseVector

__all__ = ["SparseEncoder", "SparseVector"]


class SparseEncoder(SparseEmbeddingPipeline):
    """SPLADE sparse embeddings of texts, built as sentence-transformers' ``SparseEncoder`` is.

    Args:
        model_name_or_path: a checkpoint directory or Hub id: a sentence-transformers
            ``SparseEncoder`` (``MLMTransformer`` + ``SpladePooling``, or an inference-free
            ``Router`` with a ``SparseStaticEmbedding`` for queries) or a plain ``*ForMaskedLM``.
        max_active_dims: keep at most this many entries per vector (default: all nonzero).
        dtype: ``"float32"`` or ``"int8"`` (the encoder's Linear layers).
        backend: ``"numba"`` or ``"numpy"``.
        revision: the Hub revision.

    Raises ``ValueError`` for a checkpoint that is not a masked LM or whose modules npformer does
    not run, and what loading raises.
    """

    def __init__(
        self,
        model_name_or_path,
        *,
        max_active_dims: int | None = None,
        dtype: str = "float32",
        backend: str = "numba",
        revision: str | None = None,
    ):
        directory = resolve(model_name_or_path, revision)
        super().__init__(
            SpladeModel.from_pretrained(directory, dtype=dtype, backend=backend),
            load_tokenizer(SpladeModel.tokenizer_directory(directory)),
            model_dir=directory,
            max_active_dims=max_active_dims,
        )
        self.checkpoint = directory
