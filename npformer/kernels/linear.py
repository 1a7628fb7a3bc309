"""The Linear layer, ``x @ W.T + b``: the int8 weight type and the one switch between the GEMMs.

A Linear weight is held as one of four kinds, and each backend multiplies it here:

- a ``(out, in) float32`` array: NumPy's BLAS on both backends;
- a :class:`npformer.kernels.gemm_f32.PackedMatrix` (Numba backend only): the packed float32
  micro-kernel;
- a :class:`~npformer.kernels.bfloat16.BFloat16Tensor` (``dtype="bfloat16"``): ``vdpbf16ps`` or
  its emulation (see :mod:`npformer.kernels.bfloat16`);
- a :class:`QuantizedTensor`: on the Numba backend the int8 GEMM of the CPU's ISA, AVX-512 VNNI,
  AVX2 or portable (:func:`int8_gemm`); on the NumPy backend exact integer sums on BLAS
  (:func:`int8_linear`).

:func:`linear` is the Numba backend's ``ops.linear``, :func:`numpy_linear` the NumPy backend's;
:func:`linears` (``ops.linears``) runs several products of the same activations, int8 ones as one.

The int8 ISA is chosen at import by :mod:`npformer.kernels.llvm_ir` (``NPFORMER_ISA``). Nothing here
imports Numba at module level: the Numba modules are reached through ``npformer.kernels`` (PEP 562)
when a product first needs them, so the NumPy backend runs without Numba.
"""

from __future__ import annotations

import numpy as np

from npformer import kernels
from npformer.kernels.bfloat16 import BFloat16Tensor
from npformer.kernels.layout import LANES, NR, VNNI_K, pack_vnni, round_up, unpack_vnni

F32 = np.float32
# Below this max|row| the step max/127 is subnormal and 1/step overflows to inf (0 * inf is NaN):
# such a row quantizes to zeros with step 1 (the error, under 1.5e-36, is far below half a step).
TINY_ROW = F32(127.0 * np.finfo(np.float32).tiny)
# float32 sums of int8 x int8 products are exact while every partial sum stays under 2^24:
# K_EXACT * 127 * 127 = 16,516,096 < 16,777,216, whatever order BLAS adds them in.
K_EXACT = 1024


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
    _stacked = None  # (weights, their stack) when this is the first weight of stacked(weights)
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
        backend multiplies these with BLAS (:func:`int8_linear`)."""
        if self._float is None:
            values = self._values if self._values is not None else unpack_vnni(self._packed, *self.shape)
            self._float = values.astype(np.float32)
        return self._float

    def dequantize(self) -> np.ndarray:
        """``(out, in) float32`` approximation of the original matrix."""
        return self.values.astype(np.float32) * self.scales[:, None]

    def matmul(self, x: np.ndarray, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
        """``x @ W.T + bias`` by the int8 GEMM: see :func:`int8_gemm`."""
        return int8_gemm(x, self, bias, scratch)

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


class QuantizedRows:
    """Activations quantized for the Numba backend's int8 GEMM, so that several products read one
    quantization (Q, K and V of a block; the feed-forward output quantized by its activation).

    ``values`` is the int8 path's buffer (:func:`activation_buffers`), ``scales`` one float32 step
    per (padded) row, ``source`` the float32 ``(rows, width)`` activations they were made from (what
    a product with a non-int8 weight reads; ``shape`` is its shape).
    """

    __slots__ = ("values", "scales", "source")

    def __init__(self, values: np.ndarray, scales: np.ndarray, source: np.ndarray):
        self.values, self.scales, self.source = values, scales, source

    @property
    def shape(self) -> tuple[int, int]:
        return self.source.shape


def activation_buffers(rows: int, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Empty buffers for ``(rows, width)`` activations quantized for this CPU's int8 GEMM:
    ``(values, scales, shift)``: uint8 shifted by 128 in ``(rows rounded up to 8, width rounded up
    to 4)`` for VNNI, int16 in ``(rows rounded up to 4, width rounded up to 2)`` for AVX2, int8
    ``(rows, width)`` for the portable kernel; ``scales`` start at 1 (what padding rows keep)."""
    if kernels.llvm_ir.HAS_AVX2_INT8:
        rows_p = round_up(rows, kernels.llvm_ir.AVX2_MR)
        return np.empty((rows_p, round_up(width, 2)), np.int16), np.ones(rows_p, F32), 0
    if not kernels.llvm_ir.HAS_VNNI:
        return np.empty((rows, width), np.int8), np.ones(rows, F32), 0
    rows_p = round_up(rows, kernels.llvm_ir.MR)
    return np.empty((rows_p, round_up(width, VNNI_K)), np.uint8), np.ones(rows_p, F32), 128


def quantize_activations(x: np.ndarray) -> QuantizedRows:
    """``x (rows, in) float32`` quantized per row for this CPU's int8 GEMM (:func:`activation_buffers`'
    layouts): ``scale = max|x_row| / 127``, ``q = round(x / scale)``, by the kernels of
    :mod:`npformer.kernels.gemm_int8`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    g, k = kernels.gemm_int8, x.shape[1]
    if kernels.llvm_ir.HAS_AVX2_INT8:
        q, scales = g.quantize_rows_i16(x, round_up(k, 2))
    elif not kernels.llvm_ir.HAS_VNNI:
        q, scales = g.quantize_rows(x)
    else:
        q, scales = g.quantize_rows_u8(x, round_up(k, VNNI_K))
    return QuantizedRows(q, scales, x)


def prepared(x: np.ndarray, weight) -> np.ndarray | QuantizedRows:
    """``x (rows, in) float32`` as :func:`linear` with ``weight`` reads it: quantized once
    (:func:`quantize_activations`) when ``weight`` is a :class:`QuantizedTensor`, else ``x`` itself.
    Hand the result to every product of the same activations (the Numba backend's ``ops.prepared``)."""
    return quantize_activations(x) if isinstance(weight, QuantizedTensor) else x


def int8_gemm(
    x: np.ndarray | QuantizedRows, weight: QuantizedTensor, bias: np.ndarray | None = None, scratch: np.ndarray | None = None
) -> np.ndarray:
    """``x (rows, in) float32`` -> ``x @ W.T + bias`` as ``(rows, out) float32`` on the Numba backend's
    int8 GEMM of this CPU: activations quantized per row (u8 for VNNI, int16 for AVX2; ``x`` may come
    quantized already, a :class:`QuantizedRows`), exact int32 sums, the bias ``(out,)`` added as the
    sums are dequantized. Every path gives the same bits. With ``scratch`` (a 1-D float32 buffer, see
    :func:`npformer.kernels.gemm_f32.output_buffer`) the result is a view into it. Raises
    ``ValueError`` when ``x``'s width is not the weight's ``in``."""
    if len(x.shape) != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"cannot multiply activations of shape {x.shape} by a {weight.shape} weight")
    if not isinstance(x, QuantizedRows):
        x = quantize_activations(x)
    rows, n = x.shape[0], weight.shape[0]
    g, f32 = kernels.gemm_int8, kernels.gemm_f32
    if kernels.llvm_ir.HAS_AVX2_INT8:
        packed, scales, n_p, k_p = weight.avx2_operands()
        out = f32.output_buffer(scratch, x.values.shape[0], n_p)
        return g.int8_matmul_avx2(x.values, x.scales, packed, scales, f32.padded_vector(bias, n_p), out)[:rows, :n]
    if not kernels.llvm_ir.HAS_VNNI:
        b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        return g.int8_matmul(x.values, x.scales, weight.values, weight.scales, b)
    packed, sums, scales, n_p, k_p = weight.vnni_operands()
    out = f32.output_buffer(scratch, x.values.shape[0], n_p)
    return g.int8_matmul_vnni(x.values, x.scales, packed, sums, scales, f32.padded_vector(bias, n_p), out, k_p)[:rows, :n]


def linear(x: np.ndarray, weight, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """``x @ weight.T + bias``: ``x (rows, in) float32`` -> ``(rows, out) float32``; the Numba backend's
    ``ops.linear``, the one switch between its GEMMs.

    ``weight`` is a plain ``(out, in) float32`` array (NumPy's BLAS, bias added in place), or an
    object with ``matmul(x, bias, scratch)``: a :class:`npformer.kernels.gemm_f32.PackedMatrix`
    (packed float32 GEMM, bias as the accumulators' start) or a :class:`QuantizedTensor` (int8 GEMM,
    bias fused into dequantization). Without ``bias`` the fused operation that follows adds it (GELU,
    residual + layer norm). ``scratch`` (packed and int8 weights) is a reusable 1-D float32 buffer the
    result may be written to. Raises ``ValueError`` when ``x``'s width is not the weight's ``in``.
    """
    if isinstance(x, QuantizedRows) and not isinstance(weight, QuantizedTensor):
        x = x.source  # quantized for an int8 weight beside this one
    if isinstance(weight, np.ndarray):
        if x.ndim != 2 or x.shape[1] != weight.shape[1]:
            raise ValueError(f"cannot multiply activations of shape {x.shape} by a {weight.shape} weight")
        out = x @ weight.T
        if bias is not None:
            out += bias
        return out
    return weight.matmul(x, bias, scratch)


def linears(x: np.ndarray | QuantizedRows, weights: tuple, biases: tuple) -> tuple[np.ndarray, ...]:
    """``x @ W_i.T + b_i`` for each weight of ``weights`` and bias of ``biases`` (None: no bias),
    on the same ``x (rows, in) float32`` (or as :func:`prepared` made it): a block's query, key and
    value projections. The Numba backend's ``ops.linears``: int8 weights that :func:`stacked` can
    stack run as one product (one call and one packing of the activations instead of three: 0.5-0.85x
    the time of three at 384 and 768 wide, 240-800 rows, on Zen 4), returned as column views of its
    ``(rows, sum of outs) float32`` result; the same bits as separate products, since each output
    channel's integer sum and dequantization read only its own weight row. Others one by one."""
    stack = stacked(weights)
    if stack is None:
        return tuple(linear(x, w, b) for w, b in zip(weights, biases))
    widths = [w.shape[0] for w in weights]
    bias = None
    if any(b is not None for b in biases):
        bias = np.concatenate([np.zeros(n, F32) if b is None else np.asarray(b, F32) for n, b in zip(widths, biases)])
    out = stack.matmul(x, bias)
    ends = np.cumsum(widths)
    return tuple(out[:, end - n : end] for n, end in zip(widths, ends))


def stacked(weights: tuple) -> QuantizedTensor | None:
    """One :class:`QuantizedTensor` holding the output channels of ``weights`` one after another
    (``(sum of outs, in)``), or None unless there are several, all int8 of one input width, each with
    a whole number of 32-channel blocks. Made once and remembered on the first weight (made again
    when any of them is replaced). The weights then hold their packed values as views into the
    stack's, so the model keeps them once."""
    first = weights[0]
    if not isinstance(first, QuantizedTensor) or len(weights) < 2:
        return None
    known = first._stacked
    if known is not None and len(known[0]) == len(weights) and all(a is b for a, b in zip(known[0], weights)):
        return known[1]
    k = first.shape[1]
    if any(not isinstance(w, QuantizedTensor) or w.shape[1] != k or w.shape[0] % NR for w in weights):
        return None
    n = sum(w.shape[0] for w in weights)
    stack = QuantizedTensor(
        None, np.concatenate([w.scales for w in weights]), packed=np.concatenate([w.packed for w in weights]), shape=(n, k)
    )
    start, k_p = 0, round_up(k, VNNI_K)
    for w in weights:  # each weight's channel blocks are a contiguous run of the stack's
        end = start + w.shape[0] * k_p
        w._packed, w._vnni = stack._packed[start:end], None
        if w._owns_values:
            w._values = None
        start = end
    first._stacked = (tuple(weights), stack)
    return stack


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8, as :func:`npformer.kernels.gemm_int8.quantize_rows`: ``x (rows, n)
    float32`` -> ``(q (rows, n) float32 holding integers in [-127, 127], scales (rows,) float32)``,
    ``scale = max|x_row| / 127`` (1 for an all-zero or subnormal-tiny row), ``q = round(x / scale)``."""
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], F32)
    # times the float32 reciprocal of 127, not divided by 127, as the Numba kernel writes it
    scales = np.where(amax >= TINY_ROW, amax * F32(1.0 / 127.0), F32(1.0)).astype(F32)
    return np.clip(np.rint(x * (F32(1.0) / scales)[:, None]), F32(-127.0), F32(127.0)), scales


def int8_linear(x: np.ndarray, weight: QuantizedTensor, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ W.T + bias`` as the int8 GEMMs compute it (:meth:`QuantizedTensor.matmul`): ``x (rows, in)
    float32`` quantized per row, the int32 sums of int8 products exact, then
    ``float(sum) * x_scale * w_scale + bias`` in float32 -> ``(rows, out) float32``."""
    xq, x_scales = quantize_rows(np.ascontiguousarray(x, dtype=F32))
    w = weight.float_values
    sums = np.zeros((x.shape[0], w.shape[0]), np.float64)
    for start in range(0, w.shape[1], K_EXACT):
        sums += xq[:, start : start + K_EXACT] @ w[:, start : start + K_EXACT].T
    out = sums.astype(F32) * x_scales[:, None] * weight.scales
    if bias is not None:
        out += bias
    return out


def numpy_linear(x: np.ndarray, weight, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """``x @ weight.T + bias``: ``x (rows, in) float32`` -> ``(rows, out) float32``, all in NumPy: an
    int8 :class:`QuantizedTensor` by :func:`int8_linear`, a
    :class:`~npformer.kernels.bfloat16.BFloat16Tensor` by its emulation, anything else as :func:`linear`."""
    if isinstance(weight, QuantizedTensor):
        return int8_linear(x, weight, bias)
    if isinstance(weight, BFloat16Tensor):
        return weight.emulated(x, bias)
    return linear(x, weight, bias, scratch)


def numpy_linears(x: np.ndarray, weights: tuple, biases: tuple) -> tuple[np.ndarray, ...]:
    """The NumPy backend's ``ops.linears``: :func:`numpy_linear` for each weight and bias."""
    return tuple(numpy_linear(x, w, b) for w, b in zip(weights, biases))
