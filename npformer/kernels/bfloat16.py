"""bfloat16 weights (``dtype="bfloat16"``): :class:`BFloat16Tensor` and the rounding both backends share.

bfloat16 is float32's upper half: 8 exponent bits, 7 stored mantissa bits. A Linear weight is held
as bfloat16 (half float32's memory); its product with float32 activations rounds each activation
to bfloat16 too, multiplies pairs exactly and sums in float32:

- on the Numba backend of a CPU with AVX512_BF16, by ``vdpbf16ps`` in the packed GEMM of
  :mod:`npformer.kernels.gemm_f32` (16 output channels x 2 reduction steps per instruction, twice
  the float32 FMA's work);
- elsewhere (the NumPy backend, or a CPU without AVX512_BF16) emulated: the rounded activations
  times the weights widened to float32, on the float32 GEMM. Products of two bfloat16 values are
  exact in float32, so the two differ only in the order float32 sums are rounded. The emulation is
  the documented fallback: the same accuracy, float32's speed.

Rounding is to nearest, ties to even, on the bits, as PyTorch's ``tensor.to(torch.bfloat16)``
rounds finite values (``tests/test_bfloat16.py``). ``vdpbf16ps`` reads subnormal bfloat16 inputs
(below 1.2e-38 in magnitude) as zero, which the emulation does not: the one place the two paths
differ by more than the order of sums. Nothing here imports Numba at module level.
"""

from __future__ import annotations

import numpy as np

from npformer import kernels

F32 = np.float32


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """``x`` (float32, any shape) rounded to bfloat16, nearest with ties to even -> the bits as ``uint16``
    (same shape). Finite inputs only (a NaN may come out as an infinity)."""
    bits = np.ascontiguousarray(x, dtype=F32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def widen(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits ``uint16`` (any shape) -> the same values as ``float32`` (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(F32)


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """``x`` (float32) rounded to the nearest bfloat16 value, as float32: what the bfloat16 GEMM reads."""
    return widen(to_bfloat16(x))


class BFloat16Tensor:
    """A ``(out, in)`` Linear weight or embedding table held as bfloat16.

    ``values`` are the ``(out, in) uint16`` bits, row-major (as a bfloat16 safetensors tensor stores
    them). ``matmul(x, bias, scratch)`` computes ``x @ W.T + bias`` for ``x (rows, in) float32`` ->
    ``(rows, out) float32`` with ``x`` rounded to bfloat16 (see the module docstring for the paths);
    ``rows(ids)`` gathers widened rows (embedding lookup); ``dense()`` returns float32.
    """

    def __init__(self, values: np.ndarray):
        if values.dtype != np.uint16 or values.ndim != 2:
            raise ValueError(f"a BFloat16Tensor needs (out, in) uint16 bits, got {values.dtype} {values.shape}")
        self.shape = tuple(values.shape)
        self._values = values
        self._packed = None  # (uint32 pairs in gemm_f32.pack_rows' layout, n_padded), made on first product
        self._widened = None  # float32 values for the NumPy backend's emulation (BLAS)
        self._emulated = None  # the Numba backend's float32 weight for the emulation (no AVX512_BF16)

    @classmethod
    def from_float(cls, w: np.ndarray) -> "BFloat16Tensor":
        """``w (out, in)`` float rounded to bfloat16 (nearest, ties to even)."""
        return cls(to_bfloat16(w))

    size = property(lambda self: self.shape[0] * self.shape[1])

    @property
    def values(self) -> np.ndarray:
        """The ``(out, in) uint16`` bfloat16 bits (unpacked again if only the packed copy is held)."""
        if self._values is None:
            n, k = self.shape
            pairs = kernels.gemm_f32.unpack_rows(self._packed[0], n, -(-k // 2))
            self._values = np.ascontiguousarray(pairs.view(np.uint16)[:, :k])
        return self._values

    def dense(self) -> np.ndarray:
        """The ``(out, in) float32`` values (a new array)."""
        return widen(self.values)

    dequantize = dense

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Widened rows ``W[ids]``: ``ids (...)`` int -> ``(..., in) float32``."""
        return widen(self.values[ids])

    def emulated(self, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """``x @ W.T + bias`` in NumPy: ``x`` rounded to bfloat16, times the widened weights on BLAS."""
        if self._widened is None:
            self._widened = self.dense()
        out = round_to_bfloat16(x) @ self._widened.T
        if bias is not None:
            out += bias
        return out

    def matmul(self, x: np.ndarray, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
        """``x (rows, in) float32`` -> ``x @ W.T + bias`` ``(rows, out) float32`` on the Numba backend:
        ``vdpbf16ps`` where the CPU has AVX512_BF16, else the float32 GEMM on the widened weights
        (same products, sums in another order). With ``scratch`` (see
        :func:`npformer.kernels.gemm_f32.output_buffer`) the result may be a view into it. Raises
        ``ValueError`` when ``x``'s width is not the weight's ``in``."""
        n, k = self.shape
        if x.ndim != 2 or x.shape[1] != k:
            raise ValueError(f"cannot multiply activations of shape {x.shape} by a ({n}, {k}) weight")
        f32 = kernels.gemm_f32
        if not kernels.llvm_ir.HAS_BF16:
            if self._emulated is None:
                dense = self.dense()
                self._emulated = f32.PackedMatrix(dense) if kernels.llvm_ir.PACKED_F32 else dense
            return kernels.linear.linear(round_to_bfloat16(x), self._emulated, bias, scratch)
        if self._packed is None:
            pairs = np.zeros((n, k + k % 2), np.uint16)
            pairs[:, :k] = self._values
            self._packed = (f32.pack_rows(pairs.view(np.uint32)), f32.round_up(n, f32.F32_NR))
            self._values = None  # the kernel reads the packed copy; values are unpacked again on demand
        packed, n_padded = self._packed
        pairs = f32.bfloat16_pairs(np.ascontiguousarray(x, dtype=F32)).view(np.uint32)
        out = f32.sgemm_packed(pairs, packed, f32.padded_vector(bias, n_padded), f32.output_buffer(scratch, x.shape[0], n_padded))
        return out if n == n_padded else np.ascontiguousarray(out[:, :n])
