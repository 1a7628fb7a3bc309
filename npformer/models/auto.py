"""The one ``model_type`` registry, and every ``from_pretrained``: encoders and task models.

Names as Transformers': :class:`AutoModel` loads the bare encoder, ``AutoModelFor<Task>`` an
encoder with that task's head (:mod:`npformer.models.heads`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from npformer.config import Config
from npformer.hub import resolve
from npformer.kernels.llvm_ir import HAS_AVX512
from npformer.models.bert import BertModel
from npformer.models.distilbert import DistilBertModel
from npformer.models.encoder import Encoder
from npformer.models.heads import MaskedLM, QuestionAnswerer, SequenceClassifier, TaskModel, TokenClassifier
from npformer.quantization import is_quantized
from npformer.weights import Weights

log = logging.getLogger("npformer")
ENCODERS = {"bert": BertModel, "distilbert": DistilBertModel}
PREFIXES = {"bert": ("", "bert."), "distilbert": ("", "distilbert.")}  # task checkpoints nest the encoder
DTYPES = ("float32", "int8")


def open_checkpoint(path_or_id: str | Path, revision: str | None = None) -> tuple[Path, Config, Weights]:
    """Resolve a directory or Hub id and open its config and weights (memory-mapped, validated on use)."""
    directory = resolve(path_or_id, revision)
    config = Config.from_pretrained(directory)
    return directory, config, Weights(directory, PREFIXES[config.model_type])


def build_encoder(config: Config, weights: Weights, dtype: str = "float32") -> Encoder:
    """The encoder of ``config.model_type`` with its tensors from ``weights``.

    ``dtype="int8"`` quantizes every Linear weight per output channel (see
    :mod:`npformer.quantization`); a checkpoint saved quantized is loaded as int8 whatever ``dtype``.
    float32 Linear weights are packed for the Numba GEMM (:mod:`npformer.kernels.gemm_f32`) where
    the CPU has AVX-512, and go through NumPy's BLAS otherwise.
    Raises ``ValueError`` for an unknown dtype, missing/unexpected tensors or a shape mismatch.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {DTYPES}")
    started = time.perf_counter()
    quantized = is_quantized(weights)
    try:
        encoder = ENCODERS[config.model_type](config, weights)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    encoder.check_unused(weights)
    encoder.dtype = "int8" if quantized or dtype == "int8" else "float32"
    if dtype == "int8" and not quantized:
        encoder.quantize_()
    if HAS_AVX512:  # the pooler stays float32 in int8 models: packed too
        encoder.pack_linears_(weights, layers=encoder.dtype == "float32")
    log.info("loaded a %s encoder (%d layers, %s) from %s in %.0f ms", config.model_type, config.num_hidden_layers,
             encoder.dtype, weights.directory, (time.perf_counter() - started) * 1e3)
    return encoder


class AutoModel:
    """Loads the encoder a checkpoint's ``config.json`` names (``bert`` or ``distilbert``)."""

    @staticmethod
    def from_pretrained(path_or_id: str | Path, *, revision: str | None = None, dtype: str = "float32") -> Encoder:
        """Encoder from a local directory or a Hub id (config.json + *.safetensors).

        Args:
            path_or_id: checkpoint directory, or a Hub id fetched with ``huggingface_hub``.
            revision: Hub branch, tag or commit to pin.
            dtype: ``"float32"`` or ``"int8"`` (quantize at load).

        Raises:
            FileNotFoundError: no such directory, no config.json / safetensors, Hub unreachable.
            ValueError: unknown model_type, missing, mis-typed, non-finite or mis-shaped tensors,
                unknown dtype (one line naming the file and tensor or field).
        """
        _, config, weights = open_checkpoint(path_or_id, revision)
        return build_encoder(config, weights, dtype)


class _AutoTaskModel:
    head: type[TaskModel]

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, *, revision: str | None = None,
                        dtype: str = "float32") -> TaskModel:
        """Encoder and task head from a directory or Hub id (see :meth:`AutoModel.from_pretrained`).

        Raises ``ValueError`` naming the missing head tensor when the checkpoint has no such head,
        and as :meth:`AutoModel.from_pretrained` does.
        """
        _, config, weights = open_checkpoint(path_or_id, revision)
        encoder = build_encoder(config, weights, dtype)
        try:
            return cls.head(encoder, weights)
        except KeyError as e:
            raise ValueError(f"{e.args[0]}: this checkpoint has no {cls.head.task} head "
                             f"(architectures: {config.architectures})") from None


class AutoModelForSequenceClassification(_AutoTaskModel):
    """Encoder + :class:`SequenceClassifier` (``*ForSequenceClassification`` checkpoints)."""
    head = SequenceClassifier


class AutoModelForTokenClassification(_AutoTaskModel):
    """Encoder + :class:`TokenClassifier` (``*ForTokenClassification`` checkpoints)."""
    head = TokenClassifier


class AutoModelForQuestionAnswering(_AutoTaskModel):
    """Encoder + :class:`QuestionAnswerer` (``*ForQuestionAnswering`` checkpoints)."""
    head = QuestionAnswerer


class AutoModelForMaskedLM(_AutoTaskModel):
    """Encoder + :class:`MaskedLM` (``*ForMaskedLM`` checkpoints)."""
    head = MaskedLM
