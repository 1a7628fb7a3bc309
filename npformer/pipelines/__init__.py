"""``npformer.pipeline(task, model=None, ...)``: task names and outputs as Transformers 4.57's pipelines."""

from __future__ import annotations

from pathlib import Path

from npformer.hub import cache_dir, resolve
from npformer.models.auto import (AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
                                  AutoModelForSequenceClassification, AutoModelForTokenClassification)
from npformer.pipelines.base import DEFAULT_BATCH_SIZE, Pipeline, load_tokenizer
from npformer.pipelines.embeddings import (FeatureExtractionPipeline, SentenceEmbeddingPipeline,
                                           ZeroShotClassificationPipeline)
from npformer.pipelines.fill_mask import FillMaskPipeline
from npformer.pipelines.question_answering import QuestionAnsweringPipeline
from npformer.pipelines.text_classification import TextClassificationPipeline
from npformer.pipelines.token_classification import TokenClassificationPipeline

BUILTIN_SENTIMENT = Path(__file__).resolve().parents[1] / "builtin" / "sentiment"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"

# task -> (pipeline class, the model loader, default model)
TASKS = {
    "text-classification": (TextClassificationPipeline, AutoModelForSequenceClassification, "builtin:sentiment"),
    "token-classification": (TokenClassificationPipeline, AutoModelForTokenClassification, "dslim/bert-base-NER"),
    "question-answering": (QuestionAnsweringPipeline, AutoModelForQuestionAnswering,
                           "distilbert/distilbert-base-cased-distilled-squad"),
    "fill-mask": (FillMaskPipeline, AutoModelForMaskedLM, "google-bert/bert-base-uncased"),
    "feature-extraction": (FeatureExtractionPipeline, AutoModel, MINILM_ID),
    "sentence-embeddings": (SentenceEmbeddingPipeline, AutoModel, MINILM_ID),
    "zero-shot-classification": (ZeroShotClassificationPipeline, AutoModel, MINILM_ID),
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification",
           "embeddings": "sentence-embeddings", "sentence-similarity": "sentence-embeddings"}


def default_model(task: str) -> str | Path:
    """The model a task uses when none is named: the built-in INT8 sentiment model, the locally
    fetched all-MiniLM-L6-v2 (``scripts/fetch_minilm.py``) if present, else a Hub id."""
    name = TASKS[task][2]
    if name == "builtin:sentiment":
        return BUILTIN_SENTIMENT
    if name == MINILM_ID:
        cache = cache_dir() / "all-MiniLM-L6-v2"
        if (cache / "model.safetensors").is_file():
            return cache
    return name


def pipeline(task: str, model: str | Path | None = None, *, dtype: str = "float32",
             batch_size: int = DEFAULT_BATCH_SIZE, revision: str | None = None, device: str = "cpu") -> Pipeline:
    """Build a pipeline.

    Args:
        task: ``"sentiment-analysis"``/``"text-classification"``, ``"ner"``/``"token-classification"``,
            ``"question-answering"``, ``"fill-mask"``, ``"feature-extraction"``, ``"sentence-embeddings"``,
            ``"zero-shot-classification"``.
        model: checkpoint directory or Hub id (default: see :func:`default_model`).
        dtype: ``"float32"`` or ``"int8"`` (quantize at load; a quantized checkpoint stays int8).
        batch_size: texts (or windows) per forward pass, sorted by length and padded per batch.
        revision: Hub branch, tag or commit.
        device: ``"cpu"`` (or ``-1``), as Transformers spells it; npformer runs on the CPU only.

    Raises:
        ValueError: unknown task, dtype or device, a checkpoint without the task's head.
        FileNotFoundError: model not found (or not fetchable offline), no vocab.txt.
    """
    if device not in ("cpu", -1, None):
        raise ValueError(f"device {device!r} is not available: npformer runs on the CPU only (device='cpu')")
    key = ALIASES.get(task, task)
    if key not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(set(TASKS) | set(ALIASES))}")
    pipeline_cls, loader, _ = TASKS[key]
    directory = resolve(model if model is not None else default_model(key), revision)
    net = loader.from_pretrained(directory, dtype=dtype)
    return pipeline_cls(net, load_tokenizer(directory), batch_size=batch_size, model_dir=directory)


__all__ = ["pipeline", "Pipeline", "TASKS", "default_model"]
