"""The int8 weights' packed layout: the VNNI GEMM's, and also the int8 checkpoint format, fixed
whatever the CPU. Plain NumPy, so that reading an int8 checkpoint needs no Numba.

A Linear weight ``(n, k)`` is padded to ``n_p = round_up(n, NR)`` channels and ``k_p = round_up(k,
VNNI_K)``, cut into blocks of ``LANES`` channels, and each step of ``VNNI_K`` consecutive k of a block
is stored as ``LANES * VNNI_K`` contiguous bytes: what one 512-bit ``vpdpbusd`` reads (the layout of
oneDNN's and MLAS's int8 GEMMs; see :mod:`npformer.kernels.gemm_int8`).
"""

from __future__ import annotations

import numpy as np

LANES = 16  # int32 lanes of a 512-bit vector: one packed block holds LANES output channels
MR, NR = 8, 2 * LANES  # VNNI micro-kernel tile: activation rows x output channels (two vectors)
VNNI_K = 4  # bytes of k that vpdpbusd sums into one int32 lane: packed int8 rows are padded to it


def round_up(n, multiple):
    """``n`` rounded up to a multiple of ``multiple`` (the padded sizes of packed operands)."""
    return -(-n // multiple) * multiple


def pack_vnni(values: np.ndarray) -> np.ndarray:
    """Lay out ``(n, k) int8`` weights for :func:`npformer.kernels.gemm_int8.int8_matmul_vnni`: channels
    padded to ``NR`` and k to ``VNNI_K``, blocks of ``LANES`` channels, each step of ``VNNI_K`` k stored
    as contiguous bytes -> ``(n_p * k_p,) int8``."""
    n, k = values.shape
    n_p, k_p = round_up(n, NR), round_up(k, VNNI_K)
    padded = np.zeros((n_p, k_p), np.int8)
    padded[:n, :k] = values
    return np.ascontiguousarray(padded.reshape(n_p // LANES, LANES, k_p // VNNI_K, VNNI_K).transpose(0, 2, 1, 3)).reshape(-1)


def unpack_vnni(packed: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_vnni`: ``(n_p * k_p,) int8`` -> ``(n, k) int8`` row-major copy."""
    n_p, k_p = round_up(n, NR), round_up(k, VNNI_K)
    rows = packed.reshape(n_p // LANES, k_p // VNNI_K, LANES, VNNI_K).transpose(0, 2, 1, 3).reshape(n_p, k_p)
    return np.ascontiguousarray(rows[:n, :k])
