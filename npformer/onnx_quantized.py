"""Quantized weights in ONNX exports, dequantized exactly as ONNX Runtime defines them:
``(q - zero_point) * scale`` (operator docs of MatMulInteger, DequantizeLinear and contrib
MatMulNBits). ``g`` is :class:`npformer.onnx_import.Graph`, which finds the nodes around a weight.
"""

from __future__ import annotations

import numpy as np


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None = None) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32; per-tensor, or per ``axis`` when the scale is a vector."""
    q = q.astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    if scale.ndim == 1 and axis is not None:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale.astype(np.float32)).astype(np.float32)


def nbits_weight(g, node) -> np.ndarray:
    """``MatMulNBits`` B -> float32 ``(N, K)``: blocks of ``block_size`` along K, values packed low bits first,
    ``(q - zero_point) * scale`` per (row, block); zero point 2^(bits-1) when absent (ONNX Runtime contrib docs)."""
    k, n, bits, block = (g.attr(node, a) for a in ("K", "N", "bits", "block_size"))
    if bits not in (2, 4, 8) or not block or k is None or n is None:
        raise g.fail(node, f"unsupported MatMulNBits attributes bits={bits}, block_size={block}")
    if len(node.input) > 4 and node.input[4]:
        raise g.fail(node, "g_idx (act-order reordering) is not supported")
    packed, scales = g.constant(node.input[1]), g.constant(node.input[2])
    if packed is None or scales is None:
        raise g.fail(node, "its packed weight or scales are not initializers")
    blocks = -(-k // block)
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    q = ((packed.reshape(n, blocks, -1)[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, blocks, -1)[:, :, :block]
    zp_name = node.input[3] if len(node.input) > 3 else ""
    zp = g.constant(zp_name) if zp_name else None
    if zp is None:
        zp = np.full((n, blocks), 1 << (bits - 1), np.float32)
    elif zp.dtype == np.uint8:  # packed like B, each row padded to whole bytes
        zp = ((zp.reshape(n, -1)[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, -1)[:, :blocks]
    w = (q.astype(np.float32) - zp.reshape(n, blocks, 1).astype(np.float32)) * scales.reshape(n, blocks, 1)
    return np.ascontiguousarray(w.reshape(n, blocks * block)[:, :k], dtype=np.float32)


def integer_weight(g, node) -> tuple[np.ndarray, str]:
    """``MatMulInteger`` -> (float32 ``(N, K)`` weight, the float output after ``Cast`` -> ``Mul``)."""
    b, b_zp = g.constant(node.input[1]), g.constant(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    cast = g.only_consumer(node.output[0], "Cast")
    mul = cast and g.only_consumer(cast.output[0], "Mul")
    if b is None or mul is None:
        raise g.fail(node, "not the quantize_dynamic pattern (constant B -> Cast -> Mul by the scales)")
    scale_node = g.producer.get(next((x for x in mul.input if x != cast.output[0]), ""))
    scales = [g.constant(x) for x in scale_node.input] if scale_node is not None and scale_node.op_type == "Mul" else []
    b_scale = next((s for s in scales if s is not None), None)
    if b_scale is None:
        raise g.fail(node, "cannot find B's scale (expected Mul(activation scale, weight scale) before the output Mul)")
    return dequantize(b, b_scale, b_zp, axis=1).T, mul.output[0]
