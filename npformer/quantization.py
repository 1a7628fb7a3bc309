"""INT8 per-channel quantization: quantized tensors, the int8 GEMM, quantized checkpoints.

Scheme (Q8BERT, Zafrir et al. 2019; the dynamic quantization of ONNX Runtime and CTranslate2):
  * weights: symmetric int8 per output channel, ``scale = max|W_row| / 127``, ``W ~ q * scale``;
  * activations: quantized dynamically per token (per row of ``x``) with the same rule;
  * ``x @ W.T`` is an int8 x int8 product accumulated in int32, dequantized by
    ``x_scale[row] * w_scale[col]``; the bias is added by the fused kernel that follows;
  * word embeddings optionally int8 per row; layer norm, softmax and GELU stay float32.

A quantized checkpoint is an ordinary safetensors file: each quantized tensor ``name`` is stored
as I8 with a float32 ``name_scale`` beside it, and the file metadata says
``{"quantization": "int8-per-channel-symmetric"}``. Linear weights are stored in the int8 GEMM's
packed layout (1-D; their ``(out, in)`` shapes are in the metadata under ``layout``), so the
kernel reads them straight from the memory map; word embeddings are stored row-major.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import llvmlite.binding as llvm_binding
import numpy as np
from llvmlite import ir
from numba import int32, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from npformer.gemm import PackedMatrix, array_pointer, counted_loop, i64, output_buffer, round_up, splat

from npformer.weights import QUANTIZED_SCHEME as SCHEME, SCALE_SUFFIX


@njit(cache=True, inline="always", fastmath=True)
def _row_scale(row):
    """Symmetric int8 step of one row: ``max|row| / 127`` (1 for an all-zero row)."""
    amax = np.float32(0.0)
    for j in range(row.shape[0]):
        amax = max(amax, abs(row[j]))
    return amax / np.float32(127.0) if amax > 0 else np.float32(1.0)


@njit(cache=True, inline="always", fastmath=True)
def _round_clip(v):
    return min(max(np.rint(v), np.float32(-127.0)), np.float32(127.0))


@njit(cache=True, parallel=True, fastmath=True)
def quantize_rows(x):
    """Symmetric per-row int8: ``x (rows, n) float32`` -> ``(q (rows, n) int8, scales (rows,) float32)``.

    ``scale = max|x_row| / 127`` (1 for an all-zero row), ``q = round(x / scale)`` in [-127, 127].
    """
    rows, n = x.shape
    q = np.empty((rows, n), np.int8)
    scales = np.empty(rows, np.float32)
    for i in prange(rows):
        scale = _row_scale(x[i])
        inv = np.float32(1.0) / scale
        for j in range(n):
            q[i, j] = np.int8(_round_clip(x[i, j] * inv))
        scales[i] = scale
    return q, scales


@njit(cache=True, parallel=True, fastmath=True)
def int8_matmul(xq, x_scales, wq, w_scales, bias):
    """``(xq @ wq.T) * x_scales[:, None] * w_scales[None, :] + bias`` with int32 accumulation (portable kernel).

    ``xq (rows, k) int8``, ``wq (out, k) int8``, scales and ``bias (out,)`` float32 -> ``(rows, out) float32``.
    Used where the CPU lacks AVX-512 VNNI. Parallel over blocks of output channels; each weight
    row is reused from L1 across all rows of ``xq``. LLVM vectorizes the int8 dot product into
    packed multiply-adds (vpmaddwd); see ``tests/test_quantization.py``.
    """
    rows, k = xq.shape
    n_out = wq.shape[0]
    out = np.empty((rows, n_out), np.float32)
    block = 16
    for jb in prange((n_out + block - 1) // block):
        for j in range(jb * block, min(n_out, jb * block + block)):
            ws = w_scales[j]
            for i in range(rows):
                acc = int32(0)
                for t in range(k):  # every cast explicit, or Numba widens the sum to int64
                    acc = int32(acc + int32(int32(xq[i, t]) * int32(wq[j, t])))
                out[i, j] = np.float32(acc) * x_scales[i] * ws + bias[j]
    return out


# ---- AVX-512 VNNI path ---------------------------------------------------------------------------
# vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four into one of
# 16 int32 lanes. Weights are packed so that one 64-byte vector holds 4 consecutive k of 16 output
# channels; broadcasting 4 bytes of an activation row against it advances 16 dot products at once,
# with no horizontal sums (the layout of oneDNN's and MLAS's int8 GEMMs). Activations are shifted
# to unsigned (q + 128) and the shift is undone with the weight row sums:
# sum((q + 128) * w) - 128 * sum(w) = sum(q * w). Numba has no vector types, so the micro-kernel
# (8 activation rows x 32 channels = 16 zmm accumulators, dequantization fused into the store) is
# written in LLVM IR below.
HAS_VNNI = "+avx512vnni" in llvm_binding.get_host_cpu_features().flatten().split(",")
MR, NR = 8, 32  # micro-kernel: activation rows, output channels (two 16-lane vectors)
ROW_TILE = 256  # activation rows kept in L2 while the cores split the channel blocks


@intrinsic
def _vnni_8x32(typingctx, x, x_off, ldx, w, w_off, w_block, k_steps, out, o_off, ldo, xs, i_off, w_sums,
               w_scales, bias, j_off):
    """``out[i0+a, j0:j0+32] = (sum_k xu[i0+a, k] * W[j0:j0+32, k] - 128 * w_sums) * xs * w_scales + bias``
    for a < 8, as 16 zmm accumulators over ``k_steps`` steps of 4 bytes (see the block comment)."""
    sig = types.none(x, x_off, ldx, w, w_off, w_block, k_steps, out, o_off, ldo, xs, i_off, w_sums, w_scales, bias,
                     j_off)

    def codegen(context, builder, sig, args):
        i8, i32, f32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
        v16, f16 = ir.VectorType(i32, 16), ir.VectorType(f32, 16)
        x_off, ldx, w_off, w_block, k_steps, o_off, ldo, i_off, j_off = [
            i64(builder, args[k]) for k in (1, 2, 4, 5, 6, 8, 9, 11, 15)]

        def data(k, elem):
            return array_pointer(context, builder, sig, args, k, elem)

        def at(ptr, *offsets):
            return builder.gep(ptr, [offsets[0] if len(offsets) == 1 else builder.add(*offsets)])

        def const(v):
            return ir.Constant(ir.IntType(64), v)

        x_p, w_p = at(data(0, i8), x_off), at(data(3, i8), w_off)
        dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                                "llvm.x86.avx512.vpdpbusd.512")

        def step(t, accs):
            w_step, x_step = builder.mul(t, const(64)), builder.mul(t, const(4))
            ws = [builder.load(builder.bitcast(at(w_p, builder.mul(const(h), w_block), w_step), v16.as_pointer()),
                               align=1) for h in range(2)]
            new = []
            for a in range(MR):
                xv = builder.load(builder.bitcast(at(x_p, builder.mul(const(a), ldx), x_step), i32.as_pointer()),
                                  align=1)
                xb = splat(builder, xv, v16)
                new += [builder.call(dpbusd, [accs[2 * a + h], xb, ws[h]]) for h in range(2)]
            return new

        accs = counted_loop(builder, "vnni", k_steps, [ir.Constant(v16, [0] * 16)] * (MR * 2), step)
        sums_p, wsc_p, xs_p = at(data(12, i32), j_off), at(data(13, f32), j_off), at(data(10, f32), i_off)
        bias_p = at(data(14, f32), j_off)
        out_p = at(data(7, f32), o_off)
        shift = ir.Constant(v16, [128] * 16)
        for h in range(2):
            sums = builder.load(builder.bitcast(at(sums_p, const(16 * h)), v16.as_pointer()), align=4)
            scales = builder.load(builder.bitcast(at(wsc_p, const(16 * h)), f16.as_pointer()), align=4)
            biases = builder.load(builder.bitcast(at(bias_p, const(16 * h)), f16.as_pointer()), align=4)
            correction = builder.mul(sums, shift)
            for a in range(MR):
                value = builder.sitofp(builder.sub(accs[2 * a + h], correction), f16)
                x_scale = splat(builder, builder.load(at(xs_p, const(a))), f16)
                value = builder.fadd(builder.fmul(builder.fmul(value, x_scale), scales), biases)
                dst = at(out_p, builder.mul(const(a), ldo), const(16 * h))
                builder.store(value, builder.bitcast(dst, f16.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, parallel=True, fastmath=True)
def quantize_rows_u8(x, k_padded):
    """Per-row int8 quantization, stored shifted to uint8 (``q + 128``) in a buffer padded to
    ``(rows rounded up to 8, k_padded)`` with the value 128 (a zero). Returns ``(buffer, scales)``."""
    rows, n = x.shape
    rows_padded = (rows + MR - 1) // MR * MR
    q = np.empty((rows_padded, k_padded), np.uint8)
    scales = np.ones(rows_padded, np.float32)
    for i in prange(rows_padded):
        filled = 0
        if i < rows:
            scale = _row_scale(x[i])
            inv = np.float32(1.0) / scale
            for j in range(n):
                q[i, j] = np.uint8(np.int32(_round_clip(x[i, j] * inv)) + 128)
            scales[i] = scale
            filled = n
        for j in range(filled, k_padded):
            q[i, j] = np.uint8(128)
    return q, scales


@njit(cache=True, parallel=True)
def int8_matmul_vnni(xu, x_scales, w_packed, w_sums, w_scales, bias, out, k_padded):
    """VNNI int8 GEMM, dequantized, bias added: ``xu (rows_p, k_p) uint8`` (shifted activations,
    ``rows_p % 8 == 0``), ``w_packed`` from :meth:`QuantizedTensor.packed`, ``bias (n_p,) float32``
    -> written to ``out (rows_p, n_p) float32`` (C-contiguous), which is returned.

    Tiled for the caches: 256 activation rows at a time stay in L2 while the cores split the
    32-channel blocks; a block's packed weights (``32 * k_p`` bytes) stay in L1 across those rows.
    """
    rows_p, n_padded = out.shape
    k_steps = k_padded // 4
    w_block = 16 * k_padded  # bytes of one 16-channel block
    for r0 in range(0, rows_p, ROW_TILE):
        for jb in prange(n_padded // NR):
            for i0 in range(r0, min(rows_p, r0 + ROW_TILE), MR):
                _vnni_8x32(xu, i0 * k_padded, k_padded, w_packed, jb * 2 * w_block, w_block, k_steps,
                           out, i0 * n_padded + jb * NR, n_padded, x_scales, i0, w_sums, w_scales, bias, jb * NR)
    return out


def pack_vnni(values: np.ndarray) -> np.ndarray:
    """Lay out ``(n, k) int8`` weights for :func:`int8_matmul_vnni`: channels padded to 32 and k to 4,
    blocks of 16 channels, each step of 4 k stored as 64 contiguous bytes -> ``(n_p * k_p,) int8``."""
    n, k = values.shape
    n_p, k_p = round_up(n, NR), round_up(k, 4)
    padded = np.zeros((n_p, k_p), np.int8)
    padded[:n, :k] = values
    return np.ascontiguousarray(padded.reshape(n_p // 16, 16, k_p // 4, 4).transpose(0, 2, 1, 3)).reshape(-1)


def unpack_vnni(packed: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_vnni`: ``(n_p * k_p,) int8`` -> ``(n, k) int8`` row-major copy."""
    n_p, k_p = round_up(n, NR), round_up(k, 4)
    rows = packed.reshape(n_p // 16, k_p // 4, 16, 4).transpose(0, 2, 1, 3).reshape(n_p, k_p)
    return np.ascontiguousarray(rows[:n, :k])


class QuantizedTensor:
    """A ``(out, in)`` matrix as int8 values and one float32 ``scales`` entry per row.

    The values are held row-major (``values``), in the VNNI kernel's packed layout (``packed``,
    as quantized checkpoints store Linear weights, so they map from the file with no copy), or
    both; either one is derived from the other on demand.
    ``matmul(x)`` computes ``x @ W.T`` for ``x (rows, in) float32`` with the int8 kernel;
    ``rows(ids)`` gathers dequantized rows (embedding lookup); ``dequantize()`` returns float32.
    """

    def __init__(self, values: np.ndarray | None, scales: np.ndarray, *, packed: np.ndarray | None = None,
                 shape: tuple[int, int] | None = None):
        shape = tuple(shape) if shape is not None else getattr(values, "shape", None)
        if values is None and packed is None or shape is None or len(shape) != 2:
            raise ValueError("a QuantizedTensor needs (out, in) int8 values, or packed values and their shape")
        if values is not None and (values.dtype != np.int8 or values.shape != shape):
            raise ValueError(f"values must be int8 of shape {shape}, got {values.dtype} {values.shape}")
        if scales.shape != (shape[0],):
            raise ValueError(f"scales must have shape ({shape[0]},), got {scales.shape}")
        n_p, k_p = round_up(shape[0], NR), round_up(shape[1], 4)
        if packed is not None and (packed.dtype != np.int8 or packed.shape != (n_p * k_p,)):
            raise ValueError(f"packed values of a {shape} matrix must be ({n_p * k_p},) int8, got "
                             f"{packed.dtype} {packed.shape}")
        self.shape = shape
        self.scales = np.ascontiguousarray(scales, dtype=np.float32)
        self._values = values
        self._packed = packed
        self._vnni = None  # (packed, row sums, padded scales, n_p, k_p), made on first matmul
        self._zero_bias = None  # (n_p,) zeros for calls without a bias

    @classmethod
    def from_float(cls, w: np.ndarray) -> "QuantizedTensor":
        """Quantize a float ``(out, in)`` matrix per row (per output channel)."""
        q, s = quantize_rows(np.ascontiguousarray(w, dtype=np.float32))
        out = cls(q, s)
        out._owns_values = True
        return out

    _owns_values = False  # True when the row-major values were made here (not a view of a file)
    size = property(lambda self: self.shape[0] * self.shape[1])
    nbytes = property(lambda self: self.size + self.scales.nbytes)

    @property
    def values(self) -> np.ndarray:
        """``(out, in) int8`` row-major values (unpacked once if only the packed layout is held)."""
        if self._values is None:
            self._values = unpack_vnni(self._packed, *self.shape)
        return self._values

    @property
    def packed(self) -> np.ndarray:
        """The values in :func:`pack_vnni`'s layout (packed once if only row-major values are held)."""
        if self._packed is None:
            self._packed = pack_vnni(self._values)
        return self._packed

    def dequantize(self) -> np.ndarray:
        """``(out, in) float32`` approximation of the original matrix."""
        return self.values.astype(np.float32) * self.scales[:, None]

    def matmul(self, x: np.ndarray, bias: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
        """``x (rows, in) float32`` -> ``x @ W.T + bias`` as ``(rows, out) float32`` (activations per-row
        int8; the bias ``(out,)`` is added as the int32 sums are dequantized). With ``scratch`` (a
        1-D float32 buffer, see :func:`npformer.gemm.output_buffer`) the result is a view into it."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = self.shape[0]
        if not HAS_VNNI:
            xq, xs = quantize_rows(x)
            b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
            return int8_matmul(xq, xs, self.values, self.scales, b)
        packed, sums, scales, n_p, k_p = self.vnni_operands()
        if bias is None:
            b = self._zero_bias if self._zero_bias is not None else np.zeros(n_p, np.float32)
            self._zero_bias = b
        elif n == n_p:  # aligned (every real model): the bias is used as it is
            b = np.ascontiguousarray(bias, dtype=np.float32)
        else:
            b = np.zeros(n_p, np.float32)
            b[:n] = bias
        xu, xs = quantize_rows_u8(x, k_p)
        out = int8_matmul_vnni(xu, xs, packed, sums, scales, b, output_buffer(scratch, xu.shape[0], n_p), k_p)
        return out[:x.shape[0], :n]

    def vnni_operands(self):
        """``(packed, row sums (n_p,) int32, scales (n_p,) float32, n_p, k_p)`` for :func:`int8_matmul_vnni`.

        Row-major values made only for packing are released: the kernel needs the packed copy only.
        """
        if self._vnni is None:
            n, k = self.shape
            n_p, k_p = round_up(n, NR), round_up(k, 4)
            packed = self.packed
            sums = packed.reshape(n_p // 16, k_p // 4, 16, 4).sum(axis=(1, 3), dtype=np.int32).reshape(n_p)
            scales = np.zeros(n_p, np.float32)
            scales[:n] = self.scales
            self._vnni = (packed, sums, scales, n_p, k_p)
            if self._owns_values:
                self._values = None
        return self._vnni

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized rows ``W[ids]``: ``ids (...)`` int -> ``(..., in) float32``."""
        return self.values[ids].astype(np.float32) * self.scales[ids][..., None]


def quantize_encoder_(encoder, embeddings: bool = True):
    """In place: every Linear weight of ``encoder``'s layers (and the word embeddings) to int8."""
    from npformer.models.bert import LayerWeights

    for layer in encoder.layers:
        for name in LayerWeights.LINEARS:
            w = getattr(layer, name)
            if isinstance(w, PackedMatrix):
                w = w.dense()
            if isinstance(w, np.ndarray):
                setattr(layer, name, QuantizedTensor.from_float(w))
    if embeddings and isinstance(encoder.embeddings.word, np.ndarray):
        encoder.embeddings.word = QuantizedTensor.from_float(encoder.embeddings.word)
    encoder.dtype = "int8"
    return encoder


def quantized_keys(config, weights) -> tuple[list[str], str]:
    """Stored keys of what :func:`save_quantized` turns into int8: each layer's Linear weights
    (written in the packed VNNI layout) and the word embeddings (row-major: looked up by row)."""
    from npformer.models.bert import LayerWeights, bert_layer_names
    from npformer.models.distilbert import distilbert_layer_names

    names = bert_layer_names if config.model_type == "bert" else distilbert_layer_names
    linears = [weights.resolve(names(i)[f]) for i in range(config.num_hidden_layers) for f in LayerWeights.LINEARS]
    return linears, weights.resolve("embeddings.word_embeddings.weight")


def save_quantized(src: str | Path, out_dir: str | Path, *, revision: str | None = None,
                   overwrite: bool = False) -> Path:
    """Write an int8 copy of checkpoint ``src`` (directory or Hub id) to ``out_dir``.

    Encoder Linear weights and word embeddings become int8 + per-row float32 scales; every other
    tensor (biases, norms, position embeddings, task heads) is kept in float32. Config, tokenizer
    and sentence-transformers files are copied. ``AutoModel.from_pretrained(out_dir)`` and the
    pipelines load the result directly. Returns ``out_dir``.

    The weights are written to a temporary file and renamed into place once complete.

    Raises ``FileNotFoundError``/``ValueError`` as loading does, and ``ValueError`` if ``src``
    is already quantized, ``out_dir`` is the source directory, or ``out_dir`` already holds
    weights and ``overwrite`` is not set.
    """
    from safetensors.numpy import save_file

    from npformer.models.auto import open_checkpoint

    directory, config, weights = open_checkpoint(src, revision)
    if weights.quantized:
        raise ValueError(f"{directory} is already quantized ({SCHEME})")
    out_dir = Path(out_dir)
    if out_dir.resolve() == directory.resolve() or out_dir.exists() and out_dir.samefile(directory):
        raise ValueError(f"the output directory {out_dir} is the source checkpoint; write the int8 copy elsewhere")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the output {out_dir} is a file; give a directory")
    existing = [p.name for p in out_dir.glob("*.safetensors*")] if out_dir.is_dir() else []
    if existing and not overwrite:
        raise ValueError(f"{out_dir} already holds {existing[0]}; pass --overwrite (overwrite=True) to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    linears, embeddings = quantized_keys(config, weights)
    tensors, packed_shapes = {}, {}
    for key, arr in weights.tensors.items():
        if key in linears or key == embeddings:
            q, s = quantize_rows(np.ascontiguousarray(arr, dtype=np.float32))
            tensors[key + SCALE_SUFFIX] = s
            if key in linears:
                tensors[key] = pack_vnni(q)
                packed_shapes[key] = list(q.shape)
            else:
                tensors[key] = q
        else:
            tensors[key] = np.ascontiguousarray(arr)
    temp = out_dir / ".model.safetensors.tmp"
    save_file(tensors, str(temp),
              metadata={"format": "np", "quantization": SCHEME, "layout": json.dumps({"packed": packed_shapes}),
                        "source": str(directory.name)})
    os.replace(temp, out_dir / "model.safetensors")
    for item in directory.iterdir():
        if item.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".onnx") or item.name.startswith("."):
            continue
        if item.resolve() == out_dir.resolve():  # the output directory may sit inside the source
            continue
        if item.name == "model.safetensors.index.json":
            continue
        target = out_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    return out_dir


def quantize(model, out_dir: str | Path | None = None):
    """Quantize a model to int8: an in-memory encoder / task model, or a checkpoint path.

    * ``quantize(model)`` swaps the Linear weights (and word embeddings) of a loaded encoder or
      task model for :class:`QuantizedTensor` in place and returns it;
    * ``quantize(path_or_id, out_dir)`` writes a quantized checkpoint (see :func:`save_quantized`)
      and returns ``out_dir``.
    """
    if isinstance(model, (str, Path)):
        if out_dir is None:
            raise ValueError("quantize(path, out_dir): give the directory to write the int8 checkpoint to")
        return save_quantized(model, out_dir)
    if out_dir is not None:
        raise ValueError("to write a quantized checkpoint pass the source checkpoint path, not a loaded model")
    encoder = getattr(model, "encoder", model)
    quantize_encoder_(encoder)
    return model
