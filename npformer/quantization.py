"""int8 tensors: :class:`QuantizedTensor` (int8 values + one float32 scale per row, as llama2.c's
``runq.c`` holds them) and how a quantized checkpoint stores them.

A quantized checkpoint (written by :func:`npformer.convert.save_quantized`) is an ordinary
safetensors file: each quantized tensor ``name`` is stored as I8 with a float32 ``name_scale``
beside it, and the file metadata says ``{"quantization": "int8-per-channel-symmetric"}``. Linear
weights are stored in the VNNI GEMM's packed layout (1-D; their ``(out, in)`` shapes are in the
metadata under ``layout``), so the kernel reads them straight from the memory map; word embeddings
are stored row-major. :func:`read_matrix` is the one place that reads that format.
The kernels behind ``QuantizedTensor.matmul`` are in :mod:`npformer.kernels.gemm_int8` (Numba, imported
when the first int8 tensor is made).
"""

from __future__ import annotations

import json

import numpy as np

from npformer import kernels
from npformer.kernels.layout import LANES, NR, VNNI_K, pack_vnni, round_up, unpack_vnni
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


class QuantizedTensor:
    """A ``(out, in)`` matrix as int8 values and one float32 ``scales`` entry per row.

    The values are held row-major (``values``), in the VNNI kernel's packed layout (``packed``,
    as quantized checkpoints store Linear weights, so they map from the file with no copy), or
    both; either one is derived from the other on demand.
    ``matmul(x)`` computes ``x @ W.T`` for ``x (rows, in) float32`` with the int8 kernel;
    ``rows(ids)`` gathers dequantized rows (embedding lookup); ``dequantize()`` returns float32.
    """

    def __init__(
        self,
        values: np.ndarray | None,
        scales: np.ndarray,
        *,
        packed: np.ndarray | None = None,
        shape: tuple[int, int] | None = None,
    ):
        shape = tuple(shape) if shape is not None else getattr(values, "shape", None)
        if values is None and packed is None or shape is None or len(shape) != 2:
            raise ValueError("a QuantizedTensor needs (out, in) int8 values, or packed values and their shape")
        if values is not None and (values.dtype != np.int8 or values.shape != shape):
            raise ValueError(f"values must be int8 of shape {shape}, got {values.dtype} {values.shape}")
        if scales.shape != (shape[0],):
            raise ValueError(f"scales must have shape ({shape[0]},), got {scales.shape}")
        n_p, k_p = round_up(shape[0], NR), round_up(shape[1], VNNI_K)
        if packed is not None and (packed.dtype != np.int8 or packed.shape != (n_p * k_p,)):
            raise ValueError(f"packed values of a {shape} matrix must be ({n_p * k_p},) int8, got {packed.dtype} {packed.shape}")
        self.shape = shape
        self.scales = np.ascontiguousarray(scales, dtype=np.float32)
        self._values = values
        self._packed = packed
        self._vnni = None  # (packed, row sums, padded scales, n_p, k_p), made on first matmul
        self._avx2 = None  # (int16 packed, padded scales, n_p, k_p), made on first matmul (AVX2 path)
        self._float = None  # the values as float32, made on first use by the NumPy backend

    @classmethod
    def from_float(cls, w: np.ndarray) -> "QuantizedTensor":
        """Quantize a float ``(out, in)`` matrix per row (per output channel)."""
        q, s = kernels.gemm_int8.quantize_rows(np.ascontiguousarray(w, dtype=np.float32))
        out = cls(q, s)
        out._owns_values = True
        return out

    _owns_values = False  # True when the row-major values were made here (not a view of a file)
    size = property(lambda self: self.shape[0] * self.shape[1])

    @property
    def values(self) -> np.ndarray:
        """``(out, in) int8`` row-major values (unpacked once if only the packed layout is held)."""
        if self._values is None:
            self._values = unpack_vnni(self._packed, *self.shape)
        return self._values

    @property
    def packed(self) -> np.ndarray:
        """The values in :func:`npformer.kernels.layout.pack_vnni`'s layout (packed once if only row-major values are held)."""
        if self._packed is None:
            self._packed = pack_vnni(self._values)
        return self._packed

    @property
    def float_values(self) -> np.ndarray:
        """``(out, in) float32`` holding the int8 values exactly (not scaled), made once: the NumPy
        backend multiplies these with BLAS (:func:`npformer.kernels.numpy_ops.int8_linear`)."""
        if self._float is None:
            values = self._values if self._values is not None else unpack_vnni(self._packed, *self.shape)
            self._float = values.astype(np.float32)
        return self._float

    def dequantize(self) -> np.ndarray:
        """``(out, in) float32`` approximation of the original matrix."""
        return self.values.astype(np.float32) * self.scales[:, None]

    def matmul(self, x: np.ndarray, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
        """``x (rows, in) float32`` -> ``x @ W.T + bias`` as ``(rows, out) float32`` (activations per-row
        int8; the bias ``(out,)`` is added as the int32 sums are dequantized). With ``scratch`` (a
        1-D float32 buffer, see :func:`npformer.kernels.gemm_f32.output_buffer`) the result is a view into it."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = self.shape[0]
        g, f32 = kernels.gemm_int8, kernels.gemm_f32
        if kernels.llvm_ir.HAS_AVX2_INT8:
            packed, scales, n_p, k_p = self.avx2_operands()
            xq, xs = g.quantize_rows_i16(x, k_p)
            out = g.int8_matmul_avx2(
                xq, xs, packed, scales, f32.padded_vector(bias, n_p), f32.output_buffer(scratch, xq.shape[0], n_p)
            )
            return out[: x.shape[0], :n]
        if not kernels.llvm_ir.HAS_VNNI:
            xq, xs = g.quantize_rows(x)
            b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
            return g.int8_matmul(xq, xs, self.values, self.scales, b)
        packed, sums, scales, n_p, k_p = self.vnni_operands()
        xu, xs = g.quantize_rows_u8(x, k_p)
        out = g.int8_matmul_vnni(
            xu, xs, packed, sums, scales, f32.padded_vector(bias, n_p), f32.output_buffer(scratch, xu.shape[0], n_p), k_p
        )
        return out[: x.shape[0], :n]

    def vnni_operands(self):
        """``(packed, row sums (n_p,) int32, scales (n_p,) float32, n_p, k_p)`` for :func:`int8_matmul_vnni`.

        Row-major values made only for packing are released: the kernel needs the packed copy only.
        """
        if self._vnni is None:
            n, k = self.shape
            n_p, k_p = round_up(n, NR), round_up(k, VNNI_K)
            packed = self.packed
            sums = packed.reshape(n_p // LANES, k_p // VNNI_K, LANES, VNNI_K).sum(axis=(1, 3), dtype=np.int32).reshape(n_p)
            self._vnni = (packed, sums, kernels.gemm_f32.padded_vector(self.scales, n_p), n_p, k_p)
            if self._owns_values:
                self._values = None
        return self._vnni

    def avx2_operands(self):
        """``(int16 packed weights, scales (n_p,) float32, n_p, k_p)`` for :func:`int8_matmul_avx2`, made
        once. The model then holds each weight as int16 (twice its int8 size) beside its int8 copy."""
        if self._avx2 is None:
            n, k = self.shape
            n_p, k_p = round_up(n, 2 * kernels.gemm_int8.AVX2_LANES), round_up(k, 2)
            unpacked_here = self._values is None  # only the packed copy (from the file) was held
            self._avx2 = (kernels.gemm_int8.pack_avx2(self.values), kernels.gemm_f32.padded_vector(self.scales, n_p), n_p, k_p)
            if unpacked_here:
                self._values = None  # the kernel reads the int16 copy; the packed int8 one remains
        return self._avx2

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized rows ``W[ids]``: ``ids (...)`` int -> ``(..., in) float32``."""
        return self.values[ids].astype(np.float32) * self.scales[ids][..., None]
