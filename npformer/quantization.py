"""INT8 per-channel quantization: quantized tensors, the int8 GEMM, quantized checkpoints.

Scheme (Q8BERT, Zafrir et al. 2019; the dynamic quantization of ONNX Runtime and CTranslate2):
  * weights: symmetric int8 per output channel, ``scale = max|W_row| / 127``, ``W ~ q * scale``;
  * activations: quantized dynamically per token (per row of ``x``) with the same rule;
  * ``x @ W.T`` is an int8 x int8 product accumulated in int32, dequantized by
    ``x_scale[row] * w_scale[col]``; the bias is added by the fused kernel that follows;
  * word embeddings optionally int8 per row; layer norm, softmax and GELU stay float32.

A quantized checkpoint is an ordinary safetensors file: each quantized tensor ``name`` is stored
as I8 with a float32 ``name_scale`` beside it, and the file metadata says
``{"quantization": "int8-per-channel-symmetric"}``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import llvmlite.binding as llvm_binding
import numpy as np
from llvmlite import ir
from numba import int32, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

SCHEME = "int8-per-channel-symmetric"
SCALE_SUFFIX = "_scale"


@njit(cache=True, inline="always")
def _row_scale(row):
    """Symmetric int8 step of one row: ``max|row| / 127`` (1 for an all-zero row)."""
    amax = np.float32(0.0)
    for j in range(row.shape[0]):
        amax = max(amax, abs(row[j]))
    return amax / np.float32(127.0) if amax > 0 else np.float32(1.0)


@njit(cache=True, inline="always")
def _round_clip(v):
    return min(max(np.rint(v), np.float32(-127.0)), np.float32(127.0))


@njit(cache=True, parallel=True)
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
def int8_matmul(xq, x_scales, wq, w_scales):
    """``(xq @ wq.T) * x_scales[:, None] * w_scales[None, :]`` with int32 accumulation (portable kernel).

    ``xq (rows, k) int8``, ``wq (out, k) int8``, scales float32 -> ``(rows, out) float32``.
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
                out[i, j] = np.float32(acc) * x_scales[i] * ws
    return out


# ---- AVX-512 VNNI path ---------------------------------------------------------------------------
# vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds groups of four into 16 int32
# lanes. Activations are shifted to unsigned (q + 128); the shift is undone with the weight row
# sums: sum((q + 128) * w) - 128 * sum(w) = sum(q * w). Numba has no vector types, so the micro-
# kernel (4 activation rows x 4 weight rows, 16 zmm accumulators) is written in LLVM IR.
HAS_VNNI = "+avx512vnni" in llvm_binding.get_host_cpu_features().flatten().split(",")
MR, NR, KB = 4, 4, 64  # micro-kernel rows, weight rows, bytes per step
ROW_TILE = 256  # activation rows kept in L2 while every weight row streams past


@intrinsic
def _dot_4x4_vnni(typingctx, x, x_off, ldx, w, w_off, ldw, n_steps):
    """16 int32 dot products of rows ``x[x_off + a*ldx]`` and ``w[w_off + b*ldw]`` (a, b < 4),
    ``n_steps * 64`` bytes long, as a tuple ordered ``a * 4 + b``."""
    sig = types.UniTuple(types.int32, MR * NR)(x, x_off, ldx, w, w_off, ldw, n_steps)

    def codegen(context, builder, sig, args):
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        v16 = ir.VectorType(i32, 16)
        x_off, ldx, w_off, ldw, n_steps = [builder.sext(a, i64) if a.type.width < 64 else a
                                           for a in (args[1], args[2], args[4], args[5], args[6])]
        x_base = builder.gep(builder.bitcast(context.make_array(sig.args[0])(context, builder, args[0]).data,
                                             i8.as_pointer()), [x_off])
        w_base = builder.gep(builder.bitcast(context.make_array(sig.args[3])(context, builder, args[3]).data,
                                             i8.as_pointer()), [w_off])
        dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                                "llvm.x86.avx512.vpdpbusd.512")
        reduce_add = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [v16]),
                                                    "llvm.vector.reduce.add.v16i32")
        entry = builder.basic_block
        loop = builder.append_basic_block("vnni.loop")
        done = builder.append_basic_block("vnni.done")
        builder.branch(loop)
        builder.position_at_end(loop)
        step = builder.phi(i64)
        step.add_incoming(ir.Constant(i64, 0), entry)
        accs = []
        for _ in range(MR * NR):
            acc = builder.phi(v16)
            acc.add_incoming(ir.Constant(v16, [0] * 16), entry)
            accs.append(acc)
        offset = builder.mul(step, ir.Constant(i64, KB))

        def load(base, row, ld):
            ptr = builder.gep(base, [builder.add(builder.mul(ir.Constant(i64, row), ld), offset)])
            return builder.load(builder.bitcast(ptr, v16.as_pointer()), align=1)

        xs = [load(x_base, a, ldx) for a in range(MR)]
        ws = [load(w_base, b, ldw) for b in range(NR)]
        new = [builder.call(dpbusd, [accs[a * NR + b], xs[a], ws[b]]) for a in range(MR) for b in range(NR)]
        next_step = builder.add(step, ir.Constant(i64, 1))
        step.add_incoming(next_step, loop)
        for acc, value in zip(accs, new):
            acc.add_incoming(value, loop)
        builder.cbranch(builder.icmp_signed("<", next_step, n_steps), loop, done)
        builder.position_at_end(done)
        return context.make_tuple(builder, sig.return_type, [builder.call(reduce_add, [v]) for v in new])

    return sig, codegen


@njit(cache=True, parallel=True)
def quantize_rows_u8(x, k_padded):
    """Per-row int8 quantization, stored shifted to uint8 (``q + 128``) in a buffer padded to
    ``(rows rounded up to 4, k_padded)`` with the value 128 (a zero). Returns ``(buffer, scales)``."""
    rows, n = x.shape
    rows_padded = (rows + MR - 1) // MR * MR
    q = np.full((rows_padded, k_padded), np.uint8(128))
    scales = np.ones(rows_padded, np.float32)
    for i in prange(rows):
        scale = _row_scale(x[i])
        inv = np.float32(1.0) / scale
        for j in range(n):
            q[i, j] = np.uint8(np.int32(_round_clip(x[i, j] * inv)) + 128)
        scales[i] = scale
    return q, scales


@njit(cache=True, parallel=True)
def int8_matmul_vnni(xu, x_scales, rows, wq, w_sums, w_scales, n_out):
    """VNNI int8 GEMM: ``xu (rows_p, k_p) uint8`` (shifted activations), ``wq (n_p, k_p) int8`` with
    ``n_p % 4 == 0`` and ``k_p % 64 == 0`` -> ``(rows, n_out) float32`` dequantized.

    Tiled: 256 activation rows at a time stay in L2 while the two cores split the weight rows.
    """
    k_p = xu.shape[1]
    n_steps = k_p // KB
    out = np.empty((rows, n_out), np.float32)
    for r0 in range(0, xu.shape[0], ROW_TILE):
        r1 = min(xu.shape[0], r0 + ROW_TILE)
        for jb in prange(wq.shape[0] // NR):
            j0 = jb * NR
            for i0 in range(r0, r1, MR):
                dots = _dot_4x4_vnni(xu, i0 * k_p, k_p, wq, j0 * k_p, k_p, n_steps)
                for a in range(MR):
                    i = i0 + a
                    if i < rows:
                        for b in range(NR):
                            j = j0 + b
                            if j < n_out:
                                out[i, j] = np.float32(dots[a * NR + b] - 128 * w_sums[j]) * x_scales[i] * w_scales[j]
    return out


class QuantizedTensor:
    """A ``(out, in)`` matrix as int8 ``values`` and one float32 ``scales`` entry per row.

    ``matmul(x)`` computes ``x @ W.T`` for ``x (rows, in) float32`` with the int8 kernel;
    ``rows(ids)`` gathers dequantized rows (embedding lookup); ``dequantize()`` returns float32.
    """

    def __init__(self, values: np.ndarray, scales: np.ndarray):
        if values.dtype != np.int8 or values.ndim != 2 or scales.shape != (values.shape[0],):
            raise ValueError(f"a QuantizedTensor needs (out, in) int8 values and (out,) scales, got "
                             f"{values.dtype} {values.shape} and {scales.shape}")
        self.values = values
        self.scales = np.ascontiguousarray(scales, dtype=np.float32)
        self._packed = None  # (weights padded for the VNNI kernel, their row sums), made on first use

    @classmethod
    def from_float(cls, w: np.ndarray) -> "QuantizedTensor":
        """Quantize a float ``(out, in)`` matrix per row (per output channel)."""
        q, s = quantize_rows(np.ascontiguousarray(w, dtype=np.float32))
        return cls(q, s)

    shape = property(lambda self: self.values.shape)
    size = property(lambda self: self.values.size)
    nbytes = property(lambda self: self.values.nbytes + self.scales.nbytes)

    def dequantize(self) -> np.ndarray:
        """``(out, in) float32`` approximation of the original matrix."""
        return self.values.astype(np.float32) * self.scales[:, None]

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """``x (rows, in) float32`` -> ``x @ W.T`` as ``(rows, out) float32`` (activations per-row int8)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not HAS_VNNI:
            xq, xs = quantize_rows(x)
            return int8_matmul(xq, xs, self.values, self.scales)
        packed, sums, scales = self.packed()
        xu, xs = quantize_rows_u8(x, packed.shape[1])
        return int8_matmul_vnni(xu, xs, x.shape[0], packed, sums, scales, self.values.shape[0])

    def packed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weights laid out for the VNNI kernel: ``(n_p, k_p) int8`` (rows padded to 4, columns to 64;
        a view, no copy, when already aligned), row sums ``(n_p,) int32``, scales ``(n_p,) float32``."""
        if self._packed is None:
            n, k = self.values.shape
            n_p, k_p = -(-n // NR) * NR, -(-k // KB) * KB
            w = self.values
            if (n_p, k_p) != (n, k) or not w.flags.c_contiguous:
                w = np.zeros((n_p, k_p), np.int8)
                w[:n, :k] = self.values
            sums = w.astype(np.int32).sum(axis=1, dtype=np.int32)
            scales = np.zeros(n_p, np.float32)
            scales[:n] = self.scales
            self._packed = (w, sums, scales)
        return self._packed

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantized rows ``W[ids]``: ``ids (...)`` int -> ``(..., in) float32``."""
        return self.values[ids].astype(np.float32) * self.scales[ids][..., None]


def is_quantized(weights) -> bool:
    """True if a :class:`npformer.weights.Weights` was written by :func:`save_quantized`."""
    return weights.metadata.get("quantization") == SCHEME


def quantize_encoder_(encoder, embeddings: bool = True):
    """In place: every Linear weight of ``encoder``'s layers (and the word embeddings) to int8."""
    from npformer.models.bert import LayerWeights

    for layer in encoder.layers:
        for name in LayerWeights.LINEARS:
            w = getattr(layer, name)
            if isinstance(w, np.ndarray):
                setattr(layer, name, QuantizedTensor.from_float(w))
    if embeddings and isinstance(encoder.embeddings.word, np.ndarray):
        encoder.embeddings.word = QuantizedTensor.from_float(encoder.embeddings.word)
    encoder.dtype = "int8"
    return encoder


def quantized_keys(config, weights) -> list[str]:
    """Stored keys of the tensors :func:`save_quantized` turns into int8: each layer's Linear
    weights and the word embeddings."""
    from npformer.models.bert import LayerWeights, bert_layer_names
    from npformer.models.distilbert import distilbert_layer_names

    names = bert_layer_names if config.model_type == "bert" else distilbert_layer_names
    keys = [names(i)[f] for i in range(config.num_hidden_layers) for f in LayerWeights.LINEARS]
    keys.append("embeddings.word_embeddings.weight")
    return [weights.resolve(k) for k in keys]


def save_quantized(src: str | Path, out_dir: str | Path, *, revision: str | None = None) -> Path:
    """Write an int8 copy of checkpoint ``src`` (directory or Hub id) to ``out_dir``.

    Encoder Linear weights and word embeddings become int8 + per-row float32 scales; every other
    tensor (biases, norms, position embeddings, task heads) is kept in float32. Config, tokenizer
    and sentence-transformers files are copied. ``AutoModel.from_pretrained(out_dir)`` and the
    pipelines load the result directly. Returns ``out_dir``.

    Raises ``FileNotFoundError``/``ValueError`` as loading does, and ``ValueError`` if ``src``
    is already quantized.
    """
    from safetensors.numpy import save_file

    from npformer.models.auto import open_checkpoint

    directory, config, weights = open_checkpoint(src, revision)
    if is_quantized(weights):
        raise ValueError(f"{directory} is already quantized ({SCHEME})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    to_quantize = set(quantized_keys(config, weights))
    tensors = {}
    for key, arr in weights.tensors.items():
        if key in to_quantize:
            q, s = quantize_rows(np.ascontiguousarray(arr, dtype=np.float32))
            tensors[key], tensors[key + SCALE_SUFFIX] = q, s
        else:
            tensors[key] = np.ascontiguousarray(arr)
    save_file(tensors, str(out_dir / "model.safetensors"),
              metadata={"format": "np", "quantization": SCHEME, "source": str(directory.name)})
    for item in directory.iterdir():
        if item.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".onnx") or item.name.startswith("."):
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
