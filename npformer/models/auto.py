"""Every ``from_pretrained``: encoders (the class :mod:`npformer.architectures` registers for the
config's ``model_type``) and task models.

Names as Transformers': :class:`AutoModel` loads the bare encoder, ``AutoModelFor<Task>`` an
encoder with that task's head (:mod:`npformer.models.heads`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from npformer.adapters import WEIGHTS as ADAPTER_WEIGHTS
from npformer.adapters import AdapterSet, read_adapter
from npformer.architectures import architecture
from npformer.config import Config
from npformer.files import read_json
from npformer.hub import resolve
from npformer.models import albert, bert, distilbert, electra, modernbert, mpnet, roberta  # noqa: F401 (each registers its architecture)
from npformer.models.encoder import Encoder
from npformer.models.feature_head import CONFIG_KEY, HEAD_FILE, FeatureHeadClassifier
from npformer.models.heads import MaskedLM, QuestionAnswerer, SequenceClassifier, TaskModel, TokenClassifier
from npformer.onnx_import import find_onnx, onnx_checkpoint
from npformer.quantization import is_quantized
from npformer.runtime import requested_isa
from npformer.tokenizer import Tokenizer
from npformer.weights import FLOAT_DTYPES, Weights

log = logging.getLogger("npformer")
DTYPES = ("float32", "int8", "bfloat16")
BACKENDS = ("numba", "numpy")  # whose kernels run the forward pass (Encoder.ops)


def open_checkpoint(path_or_id: str | Path, revision: str | None = None) -> tuple[Path, Config, Weights]:
    """Resolve a directory or Hub id and open its config and weights (memory-mapped, validated on use).
    A directory with an ONNX export and no safetensors is converted once into npformer's cache
    (:func:`npformer.onnx_import.onnx_checkpoint`; needs the ``onnx`` extra)."""
    directory = resolve(path_or_id, revision)
    if not any(directory.glob("*.safetensors")) and find_onnx(directory) is not None:
        directory = onnx_checkpoint(directory)  # converted once into npformer's cache
    config = Config.from_pretrained(directory)
    # task checkpoints nest the encoder under the architecture's prefix
    return directory, config, Weights(directory, ("", architecture(config.model_type).prefix))


def build_encoder(config: Config, weights: Weights, dtype: str = "float32", backend: str = "numba") -> Encoder:
    """The encoder of ``config.model_type`` with its tensors from ``weights``.

    ``dtype="int8"`` quantizes every Linear weight per output channel (see
    :mod:`npformer.quantization`); a checkpoint saved quantized is loaded as int8 whatever ``dtype``
    except ``"bfloat16"``, which it refuses. ``dtype="bfloat16"`` rounds the Linear weights and word
    embeddings to bfloat16 (exact for a checkpoint stored in bfloat16) and multiplies by
    ``vdpbf16ps`` where the CPU has AVX512_BF16, by an emulation elsewhere (see
    :mod:`npformer.kernels.bfloat16`).
    ``backend="numba"`` runs the Numba kernels (:mod:`npformer.kernels.ops`), float32 Linear weights
    packed for the Numba GEMM (:mod:`npformer.kernels.gemm_f32`) where the CPU has AVX-512 or AVX2
    (``NPFORMER_ISA``), through NumPy's BLAS otherwise. ``backend="numpy"`` runs
    :mod:`npformer.kernels.numpy_ops` and never imports Numba (unless ``dtype="int8"`` quantizes a float
    checkpoint at load): the fastest start for a one-off call, slower per text.
    Raises ``ValueError`` for an unknown dtype, backend or ``NPFORMER_ISA``, missing/unexpected tensors or
    a shape mismatch.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {DTYPES}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    requested_isa()  # a bad NPFORMER_ISA is an error on either backend, not ignored by the NumPy one
    started = time.perf_counter()
    quantized = is_quantized(weights)
    try:
        encoder = architecture(config.model_type)(config, weights)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    encoder.check_unused(weights)
    encoder.backend = backend
    if quantized and dtype == "bfloat16":
        raise ValueError(f"{weights.directory} holds an int8 checkpoint; load its float original with dtype='bfloat16'")
    encoder.dtype = "int8" if quantized or dtype == "int8" else "float32"
    if dtype == "int8" and not quantized:
        encoder.quantize_(weights)
    elif dtype == "bfloat16":
        encoder.to_bfloat16_(weights)
    encoder.pack_linears_(weights, layers=encoder.dtype == "float32")  # the pooler stays float32 in int8 models
    log.info(
        "loaded a %s encoder (%d layers, %s) from %s in %.0f ms",
        config.model_type,
        config.num_hidden_layers,
        encoder.dtype,
        weights.directory,
        (time.perf_counter() - started) * 1e3,
    )
    return encoder


def open_adapters(weights: Weights, adapter: str | Path | None) -> AdapterSet:
    """The model's :class:`AdapterSet`, reading base tensors from ``weights``; with ``adapter``, that
    adapter is read and its merged tensors replace the base's in ``weights`` before the model is
    built (so int8 quantizes the merged weights). Raises as :func:`read_adapter`, and ``ValueError``
    when an adapted tensor of the base is stored quantized."""

    def read_base(name: str):
        if not weights.has(name):
            return None
        key, dtype, file = weights.stored(name)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"{file}: tensor {key!r} is stored as {dtype}; an adapter merges into a float checkpoint "
                f"(load the float one and pass dtype='int8')"
            )
        return weights.get(name)

    adapters = AdapterSet(read_base)
    if adapter is not None:
        adapters.add("default", read_adapter(resolve(adapter)))
        for name, value in adapters.values("default").items():
            weights.replace(name, value, adapters.adapters["default"].directory / ADAPTER_WEIGHTS)
        adapters.active = "default"
    return adapters


class AutoModel:
    """Loads the encoder a checkpoint's ``config.json`` names (its ``model_type``: ``bert``,
    ``distilbert`` or any architecture registered with :mod:`npformer.architectures`)."""

    @staticmethod
    def from_pretrained(
        path_or_id: str | Path,
        *,
        revision: str | None = None,
        dtype: str = "float32",
        adapter: str | Path | None = None,
        backend: str = "numba",
    ) -> Encoder:
        """Encoder from a local directory or a Hub id (config.json + *.safetensors).

        Args:
            path_or_id: checkpoint directory, or a Hub id fetched with ``huggingface_hub``.
            revision: Hub branch, tag or commit to pin.
            dtype: ``"float32"``, ``"int8"`` (quantize at load; an adapter is merged in float32 first) or
                ``"bfloat16"`` (Linear weights rounded to bfloat16; see :func:`build_encoder`).
            adapter: a PEFT LoRA adapter directory merged into the weights as ``"default"`` (see
                :mod:`npformer.adapters`); more can be added with ``load_adapter`` / ``set_adapter``.
            backend: ``"numba"`` (the default: the fast kernels) or ``"numpy"`` (no Numba: the fastest
                start for a one-off call; see :func:`build_encoder`).

        Raises:
            FileNotFoundError: no such directory, no config.json / safetensors, Hub unreachable.
            ValueError: unknown model_type, missing, mis-typed, non-finite or mis-shaped tensors,
                unknown dtype or backend (one line naming the file and tensor or field).
        """
        _, config, weights = open_checkpoint(path_or_id, revision)
        adapters = open_adapters(weights, adapter)
        encoder = build_encoder(config, weights, dtype, backend)
        encoder.adapter_set = adapters
        return encoder


class AutoTokenizer:
    """Transformers' spelling of :meth:`npformer.Tokenizer.from_pretrained` for a directory or Hub id."""

    @staticmethod
    def from_pretrained(path_or_id: str | Path, *, revision: str | None = None, **kwargs) -> Tokenizer:
        """The checkpoint's tokenizer (``tokenizer.json`` or ``vocab.txt`` + ``tokenizer_config.json``);
        ``kwargs`` override its settings. Raises ``FileNotFoundError`` / ``ValueError`` as
        :meth:`Tokenizer.from_pretrained`."""
        return Tokenizer.from_pretrained(resolve(path_or_id, revision), **kwargs)


class _AutoTaskModel:
    head: type[TaskModel]

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        revision: str | None = None,
        dtype: str = "float32",
        adapter: str | Path | None = None,
        backend: str = "numba",
    ) -> TaskModel:
        """Encoder and task head from a directory or Hub id (see :meth:`AutoModel.from_pretrained`).

        Raises ``ValueError`` naming the missing head tensor when the checkpoint has no such head,
        and as :meth:`AutoModel.from_pretrained` does.
        """
        directory, config, weights = open_checkpoint(path_or_id, revision)
        if cls.head is SequenceClassifier and (directory / HEAD_FILE).is_file():  # a few-shot feature head
            raw = read_json(directory / "config.json")
            if isinstance(raw, dict) and CONFIG_KEY in raw:
                if adapter is not None:
                    raise ValueError(f"{directory} holds a few-shot head on a frozen encoder; it takes no adapter")
                return FeatureHeadClassifier.load(directory, build_encoder(config, weights, dtype, backend), raw)
        adapters = open_adapters(weights, adapter)
        encoder = build_encoder(config, weights, dtype, backend)
        try:
            model = encoder.heads.get(cls.head.task, cls.head)(encoder, weights)  # the architecture's own, if any
        except KeyError as e:
            raise ValueError(
                f"{e.args[0]}: this checkpoint has no {cls.head.task} head (architectures: {config.architectures})"
            ) from None
        model.adapter_set = adapters
        return model


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


ARCHITECTURE_HEADS = {
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForTokenClassification": AutoModelForTokenClassification,
    "ForQuestionAnswering": AutoModelForQuestionAnswering,
    "ForMaskedLM": AutoModelForMaskedLM,
}


def load_architecture(path_or_id: str | Path, dtype: str = "float32") -> Encoder | TaskModel:
    """The model ``config.json``'s ``architectures`` names: the task model of the first ``*For<Task>``
    entry, else the bare encoder. Raises as :meth:`AutoModel.from_pretrained`."""
    for name in Config.from_pretrained(resolve(path_or_id)).architectures:
        for suffix, loader in ARCHITECTURE_HEADS.items():
            if name.endswith(suffix):
                return loader.from_pretrained(path_or_id, dtype=dtype)
    return AutoModel.from_pretrained(path_or_id, dtype=dtype)
