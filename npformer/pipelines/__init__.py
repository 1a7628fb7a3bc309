"""``npformer.pipeline(task, model=None, ...)``: task names and outputs as Transformers 4.57's pipelines."""

from __future__ import annotations

from pathlib import Path

from npformer.adapters import adapter_base, is_adapter
from npformer.hub import BUILTIN, cache_dir, resolve
from npformer.models.auto import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from npformer.models.encoder import Encoder
from npformer.models.feature_head import FeatureHeadClassifier
from npformer.pipelines import explain_views
from npformer.pipelines.base import DEFAULT_BATCH_SIZE, Pipeline, load_tokenizer
from npformer.tokenizer import Tokenizer
from npformer.pipelines.embeddings import FeatureExtractionPipeline, SentenceEmbeddingPipeline, ZeroShotClassificationPipeline
from npformer.pipelines.fill_mask import FillMaskPipeline
from npformer.pipelines.late_interaction import PYLATE_MODULES, ColBERTModel, LateInteractionPipeline
from npformer.pipelines.question_answering import QuestionAnsweringPipeline
from npformer.pipelines.sparse import SPLADE_MODULE, SparseEmbeddingPipeline, SpladeModel
from npformer.pipelines.text_classification import TextClassificationPipeline
from npformer.pipelines.token_classification import TokenClassificationPipeline
from npformer.pipelines.zero_shot import NLIZeroShotPipeline, is_nli
from npformer.pipelines.tasks import ALIASES, TASKS, Task, get_task, register_task

BUILTIN_SENTIMENT = BUILTIN["builtin:sentiment"]
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
TRUNCATION = {"truncation": "bool", "max_length": "int"}

# the built-in tasks; the other names are Transformers' and the CLI's command names
register_task(
    Task(
        "text-classification",
        TextClassificationPipeline,
        AutoModelForSequenceClassification,
        "builtin:sentiment",
        aliases=("sentiment-analysis", "sentiment"),
        head_suffix="ForSequenceClassification",
        explain=explain_views.LABEL_SCORES,
        output="label scores",
        parameters={"top_k": "positive_int", "function_to_apply": "str", **TRUNCATION},
    )
)
register_task(
    Task(
        "token-classification",
        TokenClassificationPipeline,
        AutoModelForTokenClassification,
        "dslim/bert-base-NER",
        aliases=("ner",),
        head_suffix="ForTokenClassification",
        explain=explain_views.ENTITIES,
        output="labelled entity spans",
        parameters={
            "aggregation_strategy": "str",
            "ignore_labels": "str_list",
            "stride": "int",
            "return_probabilities": "bool",
            "max_length": "int",
        },
    )
)
register_task(
    Task(
        "question-answering",
        QuestionAnsweringPipeline,
        AutoModelForQuestionAnswering,
        "distilbert/distilbert-base-cased-distilled-squad",
        aliases=("qa",),
        head_suffix="ForQuestionAnswering",
        explain=explain_views.ANSWERS,
        output="an answer span of the context",
        warm_up=lambda pipe: pipe(question="What warms up?", context="The server warms up."),
        parameters={
            "top_k": "positive_int",
            "doc_stride": "int",
            "max_answer_len": "int",
            "max_seq_len": "int",
            "max_question_len": "int",
            "handle_impossible_answer": "bool",
            "align_to_words": "bool",
        },
    )
)
register_task(
    Task(
        "fill-mask",
        FillMaskPipeline,
        AutoModelForMaskedLM,
        "google-bert/bert-base-uncased",
        head_suffix="ForMaskedLM",
        explain=explain_views.MASKS,
        output="the likeliest tokens for each mask",
        warm_up=lambda pipe: pipe(f"The server warms {pipe.tokenizer.mask_token}."),
        parameters={"top_k": "positive_int", "targets": "str_or_list", **TRUNCATION},
    )
)
register_task(
    Task(
        "feature-extraction",
        FeatureExtractionPipeline,
        AutoModel,
        MINILM_ID,
        parameters=dict(TRUNCATION),
        output="the last hidden state of every token",
    )
)
register_task(
    Task(
        "sentence-embeddings",
        SentenceEmbeddingPipeline,
        AutoModel,
        MINILM_ID,
        aliases=("embed", "embeddings", "sentence-similarity", "similarity"),
        output="one dense vector",
        parameters={"normalize_embeddings": "bool", "precision": "str", **TRUNCATION},
    )
)
ZERO_SHOT = {
    "candidate_labels": "str_or_list",
    "multi_label": "bool",
    "hypothesis_template": "str",
    "temperature": "number",
    **TRUNCATION,
}
register_task(
    Task(
        "zero-shot-classification",
        ZeroShotClassificationPipeline,
        AutoModel,
        MINILM_ID,
        aliases=("zero-shot",),
        output="scores of the candidate labels",
        warm_up=lambda pipe: pipe("The server warms up.", ["warm", "cold"]),
        parameters=ZERO_SHOT,
        variant=lambda source: (NLIZeroShotPipeline, AutoModelForSequenceClassification) if is_nli(source) else None,
    )
)
register_task(
    Task(
        "zero-shot-similarity",
        ZeroShotClassificationPipeline,
        AutoModel,
        MINILM_ID,
        output="scores of the candidate labels",
        warm_up=lambda pipe: pipe("The server warms up.", ["warm", "cold"]),
        parameters=ZERO_SHOT,
    )
)

register_task(
    Task(
        "sparse-embeddings",
        SparseEmbeddingPipeline,
        SpladeModel,
        "naver/splade-cocondenser-ensembledistil",
        aliases=("sparse-embed", "splade"),
        output="one sparse vector over the vocabulary (SPLADE)",
        modules=(SPLADE_MODULE,),
        parameters={"max_active_dims": "positive_int", **TRUNCATION},
    )
)
register_task(
    Task(
        "late-interaction",
        LateInteractionPipeline,
        ColBERTModel,
        "lightonai/colbertv2.0",
        aliases=("colbert", "multi-vector"),
        parameters={"is_query": "bool"},
        output="one vector per token (late interaction, MaxSim)",
        modules=PYLATE_MODULES,
    )
)


def default_model(task: str) -> str | Path:
    """The model a task uses when none is named: the built-in INT8 sentiment model, the locally
    fetched all-MiniLM-L6-v2 (``scripts/fetch_minilm.py``) if present, else a Hub id."""
    name = get_task(task).default_model
    if name == "builtin:sentiment":
        return BUILTIN_SENTIMENT
    if name == MINILM_ID:
        cache = cache_dir() / "all-MiniLM-L6-v2"
        if (cache / "model.safetensors").is_file():
            return cache
    return name


def pipeline(
    task: str,
    model=None,
    *,
    tokenizer=None,
    dtype: str = "float32",  # noqa: PLR0913 - as Transformers'
    batch_size: int = DEFAULT_BATCH_SIZE,
    revision: str | None = None,
    device: str | int | None = "cpu",
    adapter=None,
    backend: str | None = None,
    **kwargs,
) -> Pipeline:
    """Build a pipeline, as ``transformers.pipeline`` (4.57) does.

    Tasks (aliases in parentheses), what a call takes and returns, and the default model:

    * ``"text-classification"`` (``"sentiment-analysis"``, ``"sentiment"``): ``pipe(texts, top_k=,
      function_to_apply=, truncation=True, max_length=)`` -> ``[{"label", "score"}]`` per text;
      default the built-in INT8 SST-2 model (``"builtin:sentiment"``).
    * ``"token-classification"`` (``"ner"``): ``pipe(texts, aggregation_strategy=, ignore_labels=,
      stride=, return_probabilities=, max_length=)`` -> a list of entities per text
      (``entity``/``entity_group``, ``score``, ``word``, ``start``, ``end``); default ``dslim/bert-base-NER``.
    * ``"question-answering"`` (``"qa"``): ``pipe(question=, context=, top_k=, doc_stride=,
      max_answer_len=, max_seq_len=, handle_impossible_answer=)`` -> ``{"score", "start", "end",
      "answer"}``; default ``distilbert/distilbert-base-cased-distilled-squad``.
    * ``"fill-mask"``: ``pipe(texts, top_k=5, targets=, truncation=False, max_length=)`` -> per mask
      ``[{"score", "token", "token_str", "sequence"}]``; default ``google-bert/bert-base-uncased``.
    * ``"feature-extraction"``: ``pipe(texts, return_tensors=, truncation=False, max_length=)`` ->
      ``(1, seq_len, hidden_size)`` per text; default all-MiniLM-L6-v2.
    * ``"sentence-embeddings"`` (``"embed"``, ``"similarity"``): ``pipe(texts)`` / ``pipe.encode(...)``
      (sentence-transformers' arguments) -> ``(n, dim) float32``; ``pipe.similarity(a, b)``; default
      all-MiniLM-L6-v2 (fetched by ``scripts/fetch_minilm.py`` when offline).
    * ``"zero-shot-classification"`` (``"zero-shot"``): on an NLI classifier (a label "entailment"),
      Transformers' method (:class:`~npformer.pipelines.zero_shot.NLIZeroShotPipeline`); on an
      embedding model (also ``"zero-shot-similarity"``), by similarity: ``pipe(texts, candidate_labels,
      hypothesis_template=, multi_label=)`` -> ``{"sequence", "labels", "scores"}`` by embedding
      similarity (not NLI); default all-MiniLM-L6-v2.
    * ``"sparse-embeddings"`` (``"sparse-embed"``, ``"splade"``): ``pipe(texts, max_active_dims=,
      truncation=True, max_length=)`` -> a :class:`~npformer.pipelines.sparse.SparseVector` per text
      (SPLADE; ``npformer.SparseEncoder`` has sentence-transformers' calls); default
      ``naver/splade-cocondenser-ensembledistil``.
    * ``"late-interaction"`` (``"colbert"``, ``"multi-vector"``): ``pipe(texts, is_query=False)`` ->
      a ``(tokens, dim)`` float32 array per text (a PyLate ColBERT checkpoint; ``npformer.ColBERT``
      has PyLate's calls); default ``lightonai/colbertv2.0``.

    Args:
        task: one of the names above.
        model: checkpoint directory, Hub id or ``"builtin:sentiment"`` (default: the task's), or a
            model already loaded (``AutoModel`` / ``AutoModelFor*``), which then needs ``tokenizer``.
        tokenizer: a :class:`Tokenizer` or a directory holding one (default: the model's directory).
        dtype: ``"float32"``, ``"int8"`` (quantize at load; a quantized checkpoint stays int8) or
            ``"bfloat16"`` (Linear weights in bfloat16; see :mod:`npformer.kernels.bfloat16`).
        batch_size: texts (or windows) per forward pass, sorted by length and padded per batch.
        revision: Hub branch, tag or commit.
        device: ``"cpu"`` (or ``-1``), as Transformers spells it; npformer runs on the CPU only.
        adapter: a PEFT LoRA adapter directory merged into ``model`` (see :mod:`npformer.adapters`).
            ``model`` may itself be an adapter directory whose ``adapter_config.json`` names its base
            (``base_model_name_or_path``).
        backend: ``"numba"`` (the default) or ``"numpy"`` when loading: NumPy only, no Numba import, for the fastest
            start of a one-off call (slower per text; see :func:`npformer.models.auto.build_encoder`).
        **kwargs: the task's call arguments, as defaults for every call (as Transformers:
            ``pipeline("ner", m, aggregation_strategy="simple")``); an argument the task's call does not
            take is a ``TypeError``.

    Raises:
        ValueError: unknown task, dtype, backend or device, a checkpoint without the task's head, a loaded
            model of the wrong kind or without a tokenizer.
        FileNotFoundError: model not found (or not fetchable offline), no vocab.txt.
    """
    if device not in ("cpu", -1, None):
        raise ValueError(f"device {device!r} is not available: npformer runs on the CPU only (device='cpu')")
    record = get_task(task)
    key, pipeline_cls, loader = record.name, record.pipeline, record.loader
    if record.variant is not None and model is not None and not isinstance(model, (str, Path)):
        pipeline_cls, loader = record.variant(model) or (pipeline_cls, loader)
    if model is not None and not isinstance(model, (str, Path)):  # a loaded model
        expected = getattr(loader, "head", Encoder)
        if key == "text-classification":
            expected = (expected, FeatureHeadClassifier)
        if not isinstance(model, expected):
            names = " or ".join(e.__name__ for e in (expected if isinstance(expected, tuple) else (expected,)))
            raise ValueError(f"task {task!r} needs a {names} model, got {type(model).__name__}")
        if tokenizer is None:
            raise ValueError("a loaded model needs tokenizer= (a Tokenizer or the checkpoint directory)")
        if adapter is not None:
            raise ValueError(
                "adapter= applies when loading; on a loaded model use model.load_adapter(name, directory, activate=True)"
            )
        if backend is not None:
            raise ValueError("backend= applies when loading; a loaded model keeps the backend it was loaded with")
        net, directory = model, resolve(tokenizer, revision) if isinstance(tokenizer, (str, Path)) else None
        loaded = True
    else:
        loaded = False
        directory = resolve(model if model is not None else default_model(key), revision)
        if is_adapter(directory) and not (directory / "config.json").is_file():  # an adapter naming its base
            if adapter is not None:
                raise ValueError(f"{directory} is an adapter; pass the base checkpoint as model= with adapter=")
            adapter, directory = directory, resolve(adapter_base(directory), revision)
        if record.variant is not None:
            pipeline_cls, loader = record.variant(directory) or (pipeline_cls, loader)
        net = loader.from_pretrained(directory, dtype=dtype, adapter=adapter, backend=backend or "numba")
    if not isinstance(tokenizer, Tokenizer):  # a loader may keep the tokenizer beside the weights, in a module's folder
        tokenizer = load_tokenizer(
            tokenizer if tokenizer is not None else getattr(loader, "tokenizer_directory", lambda d: d)(directory)
        )
    pipe = pipeline_cls(net, tokenizer, batch_size=batch_size, model_dir=directory, **kwargs)
    pipe.task = task  # the name it was asked by, as Transformers' pipe.task ("sentiment-analysis" stays so)
    pipe.checkpoint = None if loaded else directory
    return pipe


__all__ = ["pipeline", "Pipeline", "Task", "TASKS", "ALIASES", "register_task", "get_task", "default_model"]
