"""The matrix products behind the encoder figures: NumPy's float32 BLAS vs PyTorch's vs npformer's
packed float32 GEMM and int8 GEMM, and the float32 FMA peak of one core.

For the Linear shapes of a BERT-base / DistilBERT layer at seq_len 128 (rows = batch * 128), in one
run: ``x @ W.T`` through NumPy (OpenBLAS), ``torch.matmul`` (oneDNN / MKL), npformer's
``PackedMatrix.matmul`` (float32) and ``QuantizedTensor.matmul`` (int8, activation quantization
included), with 1 and 2 threads, each writing into a preallocated output (a fresh 50 MB array costs
more in page faults than the product's own stores); median of repeated calls, reported as GFLOP/s
(GOP/s for int8). The peak is npformer's 8 x 32 micro-kernel run on operands that stay in
L1 (no memory traffic): the most any float32 engine can get from one core. Writes a section to
benchmarks/RESULTS.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
"""

from __future__ import annotations

import argparse

import numpy as np
from common import append_results, median_ms, require_clean_blas_env
from numba import njit

from npformer.kernels import gemm_f32 as gemm
from npformer.kernels.llvm_ir import F32_LANES as LANES
from npformer.kernels.llvm_ir import F32_MR as MR
from npformer.kernels.llvm_ir import F32_NR as NR

SHAPES = [(128, 768, 768), (128, 768, 3072), (128, 3072, 768), (4096, 768, 3072), (4096, 3072, 768)]


@njit(cache=True)
def _l1_loop(x, w, bias, out, k, reps):
    for _ in range(reps):
        gemm.tile_rows(x, 0, k, w, 0, LANES * k, k, out, 0, NR, bias, 0, MR)


def fma_peak_gflops(runs: int) -> float:
    """GFLOP/s of the micro-kernel on one core with its operands in L1 (k = 128: 4 KB + 16 KB)."""
    k, reps = 128, 20000
    x, w = np.ones((MR, k), np.float32), gemm.pack_rows(np.ones((NR, k), np.float32))
    bias, out = np.zeros(NR, np.float32), np.empty((MR, NR), np.float32)
    ms, _ = median_ms(lambda: _l1_loop(x, w, bias, out, k, reps), runs)
    return 2 * MR * NR * k * reps / ms / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    require_clean_blas_env()
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    import npformer

    rng = np.random.default_rng(0)
    peak = fma_peak_gflops(args.runs)
    print(f"float32 FMA peak of one core: {peak:.0f} GFLOP/s")
    rows = [
        "| threads | rows x in -> out | NumPy float32 | PyTorch float32 | npformer float32 | npformer int8 |",
        "|---|---|---|---|---|---|",
    ]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        for m, k, n in SHAPES:
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            q = npformer.QuantizedTensor.from_float(w)
            p = gemm.PackedMatrix(w)
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            runs = args.runs if m < 1000 else max(3, args.runs // 5)
            out = np.empty((m, n), np.float32)  # every engine writes into a preallocated output
            t_out = torch.from_numpy(out)
            scratch = np.empty(-(-m // MR) * MR * -(-n // NR) * NR, np.float32)
            with threadpool_limits(threads, user_api="blas"):
                t_np, _ = median_ms(lambda: np.matmul(x, w.T, out=out), runs)
            t_torch, _ = median_ms(lambda: torch.matmul(tx, tw.T, out=t_out), runs)
            with threadpool_limits(1, user_api="blas"):
                t_p, _ = median_ms(lambda: p.matmul(x, scratch=scratch), runs)
                t_q, _ = median_ms(lambda: q.matmul(x, scratch=scratch), runs)
            ops = 2 * m * k * n / 1e9
            rows.append(
                f"| {threads} | {m} x {k} -> {n} | {ops / t_np * 1e3:.0f} | {ops / t_torch * 1e3:.0f} | "
                f"{ops / t_p * 1e3:.0f} | {ops / t_q * 1e3:.0f} |"
            )
            print(rows[-1])
    append_results(
        "Matrix products (GFLOP/s; GOP/s for int8)",
        f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py --runs {args.runs}",
        f"float32 FMA peak of one core (npformer's micro-kernel, operands in L1): {peak:.0f} GFLOP/s; "
        f"two cores: at most {2 * peak:.0f}.\n\n"
        "Median of repeated calls into preallocated outputs; higher is better. int8 includes quantizing "
        "the activations.\n\n" + "\n".join(rows),
    )


if __name__ == "__main__":
    main()
