"""Attention kernels (Numba): the padded multi-head attention with its masked softmax, and the
unpadded one over packed sequences with an online softmax, sliding windows and the rotary embedding.

Both run their two products on the packed float32 micro-kernel of :mod:`npformer.kernels.gemm_f32`
and keep every sum in the order written here (:data:`npformer.kernels.jit.FASTMATH`), so a row's
bits do not depend on its batch or on how the kernel was compiled. Loops that should become vectors
run from 0 over views: an index that may start below zero gets a wrap-around check per element.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from npformer.kernels.activations import _exp
from npformer.kernels.gemm_f32 import tile_rows
from npformer.kernels.jit import FASTMATH, njit
from npformer.kernels.llvm_ir import F32_LANES, F32_NR, round_up
from npformer.kernels.pack import copy_vector, transpose_tile

F32 = np.float32


@njit(inline="always", fastmath=FASTMATH)
def _sum8(x, a, b, zero):
    # x[a:b] summed in the type of ``zero``: eight partial sums (lane j % 8, which the compiler may
    # hold in one vector register), added pairwise, then the tail. A fixed order, so the same bits
    # however the kernel is compiled (see npformer.kernels.jit.FASTMATH).
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
    end = a + (b - a) // 8 * 8
    for j in range(a, end, 8):
        s0 += x[j]
        s1 += x[j + 1]
        s2 += x[j + 2]
        s3 += x[j + 3]
        s4 += x[j + 4]
        s5 += x[j + 5]
        s6 += x[j + 6]
        s7 += x[j + 7]
    total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for j in range(end, b):
        total += x[j]
    return total


@njit(inline="always", fastmath=FASTMATH)
def _masked_max8(x, mask, n, lowest):
    # max(lowest, x[j] for j < n where mask[j] != 0), by eight running maxima as in _max8
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = lowest
    end = n // 8 * 8
    for j in range(0, end, 8):
        m0 = max(m0, x[j] if mask[j] != 0 else lowest)
        m1 = max(m1, x[j + 1] if mask[j + 1] != 0 else lowest)
        m2 = max(m2, x[j + 2] if mask[j + 2] != 0 else lowest)
        m3 = max(m3, x[j + 3] if mask[j + 3] != 0 else lowest)
        m4 = max(m4, x[j + 4] if mask[j + 4] != 0 else lowest)
        m5 = max(m5, x[j + 5] if mask[j + 5] != 0 else lowest)
        m6 = max(m6, x[j + 6] if mask[j + 6] != 0 else lowest)
        m7 = max(m7, x[j + 7] if mask[j + 7] != 0 else lowest)
    top = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(end, n):
        top = max(top, x[j] if mask[j] != 0 else lowest)
    return top


@njit(inline="always", fastmath=FASTMATH)
def _masked_softmax_row_(row, mask_row, n_valid, n_keys):
    # In place softmax of one row of attention scores; keys with mask 0 get probability 0
    # (reference: Transformers adds the float32 minimum to masked scores before softmax, so a row
    # with every key masked becomes uniform there, and here too). The passes stop at ``n_keys``
    # (one past the last unmasked key): padding after it never changes the order of the sum, so
    # a row's result does not depend on how long its batch-mates are.
    k_len = mask_row.shape[0]
    if n_valid == 0:  # nothing to attend to
        for j in range(k_len):
            row[j] = F32(1.0) / k_len
        return
    lowest = F32(-3.0e38)
    m = _masked_max8(row, mask_row, n_keys, lowest)  # branch-free passes (selects) that vectorize
    for j in range(n_keys):
        row[j] = _exp(row[j] - m) if mask_row[j] != 0 else F32(0.0)
    inv = F32(1.0) / _sum8(row, 0, n_keys, F32(0.0))
    for j in range(n_keys):
        row[j] *= inv
    for j in range(n_keys, k_len):
        row[j] = F32(0.0)


@njit(inline="always")
def _pack_head(q, k, v, r0, c0, seq, d, scale, qh, kt, vp):  # noqa: PLR0913
    # One (sequence, head) pair's operands for the packed micro-kernel: ``qh[i, t] = q[r0 + i, c0 +
    # t] * scale``, keys transposed into blocks of L = F32_LANES keys ``kt[((i // L) * d + t) * L +
    # i % L]`` and values into blocks of L dimensions ``vp[((t // L) * seq + i) * L + t % L]``.
    # Whole vectors and L x L tiles where rows are unit-stride (pack.py), elements elsewhere.
    L = F32_LANES
    vectors = d // L if q.strides[1] == k.strides[1] == v.strides[1] == 4 else 0
    ldq, ldk, ldv = q.strides[0] // 4, k.strides[0] // 4, v.strides[0] // 4
    for i in range(seq):
        for tb in range(vectors):
            copy_vector(qh, i * d + tb * L, q, (r0 + i) * ldq + c0 + tb * L, scale)
            copy_vector(vp, (tb * seq + i) * L, v, (r0 + i) * ldv + c0 + tb * L, F32(1.0))
        for t in range(vectors * L, d):
            qh[i, t] = q[r0 + i, c0 + t] * scale
            vp[((t // L) * seq + i) * L + t % L] = v[r0 + i, c0 + t]
    tiles = seq // L if vectors else 0
    for jb in range(tiles):
        for tb in range(vectors):
            transpose_tile(kt, (jb * d + tb * L) * L, k, (r0 + jb * L) * ldk + c0 + tb * L, ldk)
    for i in range(seq):
        for t in range(0 if i >= tiles * L else vectors * L, d):
            kt[((i // L) * d + t) * L + i % L] = k[r0 + i, c0 + t]


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def attention(q, k, v, mask, num_heads, probs, bias=None):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017), ``softmax(Q K^T / sqrt(d_head)
    + bias + mask) V`` for every (sequence, head) pair, in parallel over the pairs.

    ``q, k, v (batch * seq, hidden) float32`` are the projections (heads side by side along hidden),
    ``mask (batch, seq)`` int (0 = padding key). Returns the context ``(batch * seq, hidden) float32``.
    ``probs`` is ``(batch, num_heads, seq, seq) float32`` to receive the attention probabilities, or
    an empty ``(0, 0, 0, 0)`` array when they are not wanted. ``bias`` is ``(num_heads, seq, seq)
    float32``, added to every sequence's scores (MPNet's relative position bias), or None.

    Both products run on the packed micro-kernel of :mod:`npformer.kernels.gemm_f32`: per pair, K^T (keys
    padded to ``F32_NR``) and V (head dimensions padded to it) are packed into small scratch buffers and
    the scores of one pair stay in cache from ``Q K^T`` through the softmax to ``P V``.
    reference: transformers BertSelfAttention (eager) / DistilBERT MultiHeadSelfAttention; tested
    against a float64 NumPy attention in ``tests/test_kernels.py::test_attention``.
    """
    batch, seq = mask.shape
    hidden = q.shape[1]
    d = hidden // num_heads
    keys_p, d_p = round_up(seq, F32_NR), round_up(d, F32_NR)
    scale = F32(1.0 / math.sqrt(d))
    context = np.empty((batch * seq, hidden), np.float32)
    zeros = np.zeros(max(keys_p, d_p), np.float32)
    keep_probs = probs.shape[0] > 0
    for pair in prange(batch * num_heads):
        b, h = pair // num_heads, pair % num_heads
        r0, c0 = b * seq, h * d
        qh = np.empty((seq, d), np.float32)
        kt = np.zeros(keys_p * d, np.float32)  # blocks of F32_LANES (L) keys, each [d][L]
        vp = np.zeros(d_p * seq, np.float32)  # blocks of L head dimensions, each [seq][L]
        _pack_head(q, k, v, r0, c0, seq, d, scale, qh, kt, vp)
        scores = np.empty((seq, keys_p), np.float32)
        for jb in range(keys_p // F32_NR):
            tile_rows(qh, 0, d, kt, jb * F32_NR * d, F32_LANES * d, d, scores, jb * F32_NR, keys_p, zeros, 0, seq)
        n_valid = n_keys = 0
        for j in range(seq):
            if mask[b, j] != 0:
                n_valid += 1
                n_keys = j + 1
        if bias is not None:
            for i in range(seq):
                for j in range(seq):
                    scores[i, j] += bias[h, i, j]
        for i in range(seq):
            _masked_softmax_row_(scores[i, :seq], mask[b], n_valid, n_keys)
            if keep_probs:
                probs[b, h, i] = scores[i, :seq]
        direct = d == d_p  # whole column blocks: the products write the head's columns of the context
        ctx = context if direct else np.empty((seq, d_p), np.float32)
        o_off, ldo = (r0 * hidden + c0, hidden) if direct else (0, d_p)
        for jb in range(d_p // F32_NR):
            tile_rows(
                scores, 0, keys_p, vp, jb * F32_NR * seq, F32_LANES * seq, seq, ctx, o_off + jb * F32_NR, ldo, zeros, 0, seq
            )
        if not direct:
            context[r0 : r0 + seq, c0 : c0 + d] = ctx[:, :d]
    return context


QUERY_BLOCK = 32  # query rows sharing each block of keys and values while it sits in cache


@njit(inline="always", fastmath=FASTMATH)
def _max8(x, a, b, start):
    # max(start, x[a:b]) by eight running maxima, combined pairwise: a maximum is exact in any order,
    # and the compiler makes vectors of the eight lanes (a one-variable compare chain stays scalar).
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = start
    end = a + (b - a) // 8 * 8
    for j in range(a, end, 8):
        m0 = max(m0, x[j])
        m1 = max(m1, x[j + 1])
        m2 = max(m2, x[j + 2])
        m3 = max(m3, x[j + 3])
        m4 = max(m4, x[j + 4])
        m5 = max(m5, x[j + 5])
        m6 = max(m6, x[j + 6])
        m7 = max(m7, x[j + 7])
    top = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(end, b):
        top = max(top, x[j])
    return top


@njit(inline="always", fastmath=FASTMATH)
def _online_softmax_(row, a, b, m, total, acc):
    # One query's step of the online softmax over a block of keys: ``row`` holds its scores, of
    # which ``a .. b`` are keys it attends to; they become exp(score - new max), the others 0. The
    # running sum and the value sum ``acc`` are rescaled to the new maximum. Returns (max, sum).
    # Each pass is a loop from 0 over a view: an index that may start below 0 (``range(a, b)``)
    # gets a wrap-around check per element, which keeps the loop from becoming vectors.
    if a >= b:
        for j in range(row.shape[0]):
            row[j] = F32(0.0)
        return m, total
    live, after = row[a:b], row[b:]
    top = _max8(live, 0, live.shape[0], m)
    correction = _exp(m - top)
    for j in range(a):
        row[j] = F32(0.0)
    for j in range(live.shape[0]):
        live[j] = _exp(live[j] - top)
    for j in range(after.shape[0]):
        after[j] = F32(0.0)
    total = total * correction + _sum8(live, 0, live.shape[0], F32(0.0))
    if correction != F32(1.0):  # x * 1 is x: the rescale is skipped when the maximum stays
        for t in range(acc.shape[0]):
            acc[t] *= correction
    return top, total


@njit(inline="always", fastmath=FASTMATH)
def _head_row_(dst, x, row, c0, d, cos, sin, scale):
    # dst[:d] = scale * the head at columns c0 .. c0 + d of row ``row`` of x, after the rotary
    # embedding when ``cos`` is given: x cos + rotate_half(x) sin (Transformers' apply_rotary_pos_emb).
    # Loops from 0 over views, so that they become vectors.
    src = x[row, c0 : c0 + d]
    if cos is None:
        for t in range(d):
            dst[t] = scale * src[t]
        return
    half = d // 2
    c, s, low, high = cos[row], sin[row], src[:half], src[half:]
    for t in range(half):
        dst[t] = scale * (low[t] * c[t] + -high[t] * s[t])
    c, s, out = c[half:], s[half:], dst[half:d]
    for t in range(d - half):
        out[t] = scale * (high[t] * c[t] + low[t] * s[t])


@njit(inline="always", fastmath=FASTMATH)
def _pack_keys_values(k, v, start, n, c0, d, cos, sin, kt, vp, tile):  # noqa: PLR0913
    # One (sequence, head) pair's keys (rotated when ``cos`` is given) transposed into blocks of
    # L = F32_LANES keys, ``kt[((j // L) * d + t) * L + j % L]``, and its values into blocks of L
    # head dimensions, ``vp[((t // L) * keys_p + j) * L + t % L]`` (``keys_p = vp.size // d_p``).
    # Keys go through ``tile (L, d)``, L at a time, then whole L x L transposes (pack.py).
    L = F32_LANES
    keys_p = vp.shape[0] // round_up(d, F32_NR)
    vectors = d // L if v.strides[1] == 4 else 0
    ldv = v.strides[0] // 4
    for j in range(n):
        for tb in range(vectors):
            copy_vector(vp, (tb * keys_p + j) * L, v, (start + j) * ldv + c0 + tb * L, F32(1.0))
        for t in range(vectors * L, d):
            vp[((t // L) * keys_p + j) * L + t % L] = v[start + j, c0 + t]
    for j0 in range(0, n, L):
        rows = min(L, n - j0)
        for r in range(rows):
            _head_row_(tile[r], k, start + j0 + r, c0, d, cos, sin, F32(1.0))
        whole = d // L if rows == L else 0
        for tb in range(whole):
            transpose_tile(kt, (j0 * d + tb * L * L), tile, tb * L, d)
        for r in range(rows):
            for t in range(whole * L, d):
                kt[((j0 // L) * d + t) * L + r] = tile[r, t]


@njit(parallel=True, fastmath=FASTMATH, nogil=True)
def varlen_attention(q, k, v, offsets, num_heads, window, block, cos=None, sin=None):  # noqa: PLR0913
    """Attention over sequences packed without padding, never holding a ``(seq, seq)`` score matrix:
    ``q, k, v (tokens, hidden) float32`` (heads side by side; views such as column slices of one
    fused projection are read in place), sequence ``s`` in rows ``offsets[s] .. offsets[s + 1]``;
    query ``i`` attends to the keys ``j`` of its sequence with ``|i - j| <= window`` (``window <
    0``: all of them). With ``cos``/``sin`` ``(tokens, head_dim)`` the rotary embedding (Su et al.
    2021) is applied to queries and keys as they are read. Returns the context ``(tokens, hidden)
    float32``. ``block`` (at most this many keys per step) is a multiple of ``F32_NR``.

    Per (sequence, head) pair, in parallel: ``QUERY_BLOCK`` queries at a time against the keys any of
    them attends to (from the first, rounded down to ``F32_NR``, to one past the last, rounded up), in
    steps of at most ``block`` keys; both products on the packed micro-kernel of
    :mod:`npformer.kernels.gemm_f32` (K^T and V packed once per pair, as :func:`attention` packs
    them), each query row kept as a running maximum, sum and weighted value sum (the online softmax
    of FlashAttention, Dao et al. 2022). The scores held are ``QUERY_BLOCK x block``; a local layer
    whose band fits in ``block`` keys takes it in one step, and computes no scores outside it beyond
    the rounding. The steps depend only on the sequence's length, so a text gives the same bits
    alone or in any batch. Reference: the plain softmax of :func:`attention` (tested to 1e-5 up to 8,192 tokens)
    and Transformers' ModernBERT eager attention with its sliding-window mask.
    """
    tokens, hidden = q.shape
    d = hidden // num_heads
    d_p = round_up(d, F32_NR)
    n_seq = offsets.shape[0] - 1
    scale = F32(1.0 / math.sqrt(d))
    context = np.empty((tokens, hidden), np.float32)
    zeros = np.zeros(d_p, np.float32)
    for pair in prange(n_seq * num_heads):
        tile = np.empty((F32_LANES, d), np.float32)
        s, h = pair // num_heads, pair % num_heads
        start, n, c0 = offsets[s], offsets[s + 1] - offsets[s], h * d
        keys_p = round_up(n, F32_NR)
        kt = np.zeros(keys_p * d, np.float32)  # blocks of F32_LANES keys, each [d][L]
        vp = np.zeros(d_p * keys_p, np.float32)  # blocks of F32_LANES head dimensions, each [keys_p][L]
        _pack_keys_values(k, v, start, n, c0, d, cos, sin, kt, vp, tile)
        qb = np.empty((QUERY_BLOCK, d), np.float32)
        acc = np.empty((QUERY_BLOCK, d_p), np.float32)
        part = np.empty((QUERY_BLOCK, d_p), np.float32)
        ld = min(block, keys_p)  # the scores' row stride: the widest step
        scores = np.empty((QUERY_BLOCK, ld), np.float32)
        m = np.empty(QUERY_BLOCK, np.float32)
        total = np.empty(QUERY_BLOCK, np.float32)
        for i0 in range(0, n, QUERY_BLOCK):
            rows = min(QUERY_BLOCK, n - i0)
            for r in range(rows):
                m[r], total[r] = F32(-3.0e38), F32(0.0)
                _head_row_(qb[r], q, start + i0 + r, c0, d, cos, sin, scale)
                for t in range(d_p):
                    acc[r, t] = F32(0.0)
            lo, hi = (0, n) if window < 0 else (max(0, i0 - window), min(n, i0 + rows + window))
            first, last = lo // F32_NR * F32_NR, round_up(hi, F32_NR)
            for j0 in range(first, last, block):
                width = min(block, last - j0)
                for jb in range(width // F32_NR):
                    tile_rows(
                        qb,
                        0,
                        d,
                        kt,
                        (j0 // F32_NR + jb) * F32_NR * d,
                        F32_LANES * d,
                        d,
                        scores,
                        jb * F32_NR,
                        ld,
                        zeros,
                        0,
                        rows,
                    )
                for r in range(rows):  # the online softmax: scores become this block's weights
                    i = i0 + r
                    a, b = (j0, min(j0 + width, n)) if window < 0 else (max(j0, i - window), min(j0 + width, n, i + window + 1))
                    m[r], total[r] = _online_softmax_(scores[r, :width], a - j0, b - j0, m[r], total[r], acc[r])
                for tb in range(d_p // F32_NR):  # this block's weights times its values
                    tile_rows(
                        scores,
                        0,
                        ld,
                        vp,
                        tb * F32_NR * keys_p + j0 * F32_LANES,
                        F32_LANES * keys_p,
                        width,
                        part,
                        tb * F32_NR,
                        d_p,
                        zeros,
                        0,
                        rows,
                    )
                for r in range(rows):
                    for t in range(d_p):
                        acc[r, t] += part[r, t]
            for r in range(rows):
                inv = F32(1.0) / total[r]
                for t in range(d):
                    context[start + i0 + r, c0 + t] = acc[r, t] * inv
    return context
