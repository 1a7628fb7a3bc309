"""int8 tensors: :class:`QuantizedTensor` (int8 values + one float32 scale per row, as llama2.c's
``runq.c`` holds them) and how a quantized checkpoint stores them.

A quantized checkpoint (written by :func:`npformer.convert.save_quantized`) is an ordinary
safetensors file: each quantized tensor ``name`` is stored as I8 with a float32 ``name_scale``
beside it, and the file metadata says ``{"quantization": "int8-per-channel-symmetric"}``. Linear
weights are stored in the VNNI GEMM's packed layout (1-D; their ``(out, in)`` shapes are in the
metadata under ``layout``), so the kernel reads them straight from the memory map; word embeddings
are stored row-major. :func:`read_matrix` is the one place that reads that format.
The type itself, and the GEMMs that multiply it, are in :mod:`npformer.kernels.linear`.
"""

from __future__ import annotations

import json


from npformer.kernels.linear import QuantizedTensor
from npformer.weights import Weights

SCHEME = "int8-per-channel-symmetric"  # metadata "quantization" of a quantized checkpoint
SCALE_SUFFIX = "_scale"  # an int8 tensor ``name`` has its float32 per-row scales in ``name_scale``


def is_quantized(weights: Weights) -> bool:
    """True if the checkpoint was written by :func:`npformer.convert.save_quantized`."""
    return weights.metadata.get("quantization") == SCHEME


def packed_shapes(weights: Weights) -> dict[str, list[int]]:
    """``(out, in)`` shape of each Linear weight a quantized checkpoint stores packed (metadata ``layout``).
    Raises ``ValueError`` naming the file when the metadata is not a JSON object of shapes."""
    try:
        shapes = dict(json.loads(weights.metadata.get("layout", "{}")).get("packed", {}))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError, RecursionError):
        raise ValueError(f"{weights.files[0]}: metadata 'layout' is not a JSON object of packed shapes") from None
    for name, shape in shapes.items():
        if not (
            isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2**31 for n in shape)
        ):
            raise ValueError(
                f"{weights.files[0]}: metadata 'layout' gives {name!r} the shape {shape!r}; "
                "expected [out, in], two positive integers"
            )
    return shapes


def read_matrix(weights: Weights, name: str, shape: tuple[int, int] | None = None):
    """A Linear weight or embedding table ``name`` (of ``shape``, when given): a float32 array (see
    :meth:`Weights.get`), or a :class:`QuantizedTensor` when it is stored as int8.

    Raises ``KeyError`` when it is missing and ``ValueError`` naming the file and tensor when an
    int8 tensor has no ``_scale`` beside it, its scales are not finite and positive, or its size
    or shape does not match.
    """
    key, dtype, file = weights.stored(name)
    if dtype != "I8" or not (is_quantized(weights) or weights.has(key + SCALE_SUFFIX)):
        return weights.get(name, shape)
    if not weights.has(key + SCALE_SUFFIX):
        raise ValueError(
            f"{file}: int8 tensor {key!r} has no {key + SCALE_SUFFIX!r} beside it; a quantized tensor "
            f"needs its float32 per-row scales"
        )
    scales = weights.get(key + SCALE_SUFFIX)  # float dtype and finite values checked there
    if scales.size and scales.min() <= 0:
        raise ValueError(f"{file}: tensor {key + SCALE_SUFFIX!r} holds a scale <= 0 ({scales.min()}); scales must be positive")
    values = weights.raw(key)
    packed_shape = packed_shapes(weights).get(key)
    try:
        matrix = (
            QuantizedTensor(values, scales)
            if packed_shape is None
            else QuantizedTensor(None, scales, packed=values, shape=packed_shape)
        )
    except ValueError as e:
        raise ValueError(f"{file}: tensor {key!r}: {e}") from None
    if shape is not None and tuple(matrix.shape) != tuple(shape):
        raise ValueError(f"{file}: tensor {key!r} has shape {tuple(matrix.shape)} but the config implies {tuple(shape)}")
    return matrix


__all__ = ["QuantizedTensor", "is_quantized", "packed_shapes", "read_matrix"]
