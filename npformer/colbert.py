"""``npformer.ColBERT``: PyLate's ``models.ColBERT`` surface over the ``"late-interaction"``
pipeline (:mod:`npformer.pipelines.late_interaction`), and PyLate's ``colbert_scores`` and
``rerank``."""

from __future__ import annotations

from npformer.hub import resolve
from npformer.pipelines.base import load_tokenizer
from npformer.pipelines.late_interaction import ColBERTModel, LateInteractionPipeline, colbert_scores, encoder_directory, rerank

__all__ = ["ColBERT", "colbert_scores", "rerank"]


class ColBERT(LateInteractionPipeline):
    """Per-token vectors and MaxSim scores of a PyLate checkpoint, built as PyLate's ``ColBERT`` is.

    Args:
        model_name_or_path: a PyLate checkpoint directory or Hub id.
        query_length: override the checkpoint's (tokens, marker included).
        document_length: override the checkpoint's (tokens, marker included).
        dtype: ``"float32"`` or ``"int8"`` (the encoder's Linear layers).
        backend: ``"numba"`` or ``"numpy"``.
        revision: the Hub revision.

    Raises ``ValueError`` for a checkpoint npformer does not run (naming the file), and what
    :meth:`npformer.AutoModel.from_pretrained` raises.
    """

    def __init__(
        self,
        model_name_or_path,
        *,
        query_length: int | None = None,
        document_length: int | None = None,
        dtype: str = "float32",
        backend: str = "numba",
        revision: str | None = None,
    ):
        directory = resolve(model_name_or_path, revision)
        super().__init__(
            ColBERTModel.from_pretrained(directory, dtype=dtype, backend=backend),
            load_tokenizer(encoder_directory(directory)),
            model_dir=directory,
            query_length=query_length,
            document_length=document_length,
        )
        self.checkpoint = directory
