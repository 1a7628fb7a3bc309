"""``model_type`` -> encoder class, and ``from_pretrained`` for encoders and task models."""

from __future__ import annotations

from pathlib import Path

from npformer.config import Config
from npformer.gemm import HAS_AVX512
from npformer.hub import resolve
from npformer.models.bert import BertModel, Encoder
from npformer.models.distilbert import DistilBertModel
from npformer.weights import Weights

ENCODERS = {"bert": BertModel, "distilbert": DistilBertModel}
PREFIXES = {"bert": ("", "bert."), "distilbert": ("", "distilbert.")}
DTYPES = ("float32", "int8")


def open_checkpoint(path_or_id: str | Path, revision: str | None = None) -> tuple[Path, Config, Weights]:
    """Resolve a directory or Hub id and open its config and weights (memory-mapped)."""
    directory = resolve(path_or_id, revision)
    config = Config.from_pretrained(directory)
    return directory, config, Weights(directory, PREFIXES[config.model_type])


def build_encoder(config: Config, weights: Weights, dtype: str = "float32") -> Encoder:
    """The encoder of ``config.model_type`` with its tensors from ``weights``.

    ``dtype="int8"`` quantizes every Linear weight per output channel (see
    :mod:`npformer.quantization`); a checkpoint saved quantized is loaded as int8 whatever ``dtype``.
    float32 Linear weights are packed for the Numba GEMM (:mod:`npformer.gemm`) where the CPU has
    AVX-512, and go through NumPy's BLAS otherwise.
    Raises ``ValueError`` for an unknown dtype, missing/unexpected tensors or a shape mismatch.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {DTYPES}")
    from npformer import quantization

    quantized = weights.quantized
    try:
        encoder = ENCODERS[config.model_type](config, weights)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    encoder.check_unused(weights)
    encoder.dtype = "int8" if quantized or dtype == "int8" else "float32"
    if dtype == "int8" and not quantized:
        quantization.quantize_encoder_(encoder)
    elif encoder.dtype == "float32" and HAS_AVX512:
        encoder.pack_linears_(weights)
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
            ValueError: unknown model_type, missing or mis-shaped tensors, unknown dtype.
        """
        _, config, weights = open_checkpoint(path_or_id, revision)
        return build_encoder(config, weights, dtype)
