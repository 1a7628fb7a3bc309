"""The matrix products behind the encoder figures: NumPy's float32 BLAS vs PyTorch's vs npformer's int8.

For the Linear shapes of a BERT-base / DistilBERT layer at seq_len 128 (rows = batch * 128), in one
run: ``x @ W.T`` through NumPy (OpenBLAS), ``torch.nn.functional.linear`` (oneDNN / MKL), and
npformer's int8 ``QuantizedTensor.matmul`` (activation quantization included), with 1 and 2
threads; median of repeated calls, reported as GFLOP/s (GOP/s for int8). Writes a section to
benchmarks/RESULTS.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py
"""

from __future__ import annotations

import argparse

import numpy as np
from common import append_results, median_ms, require_clean_blas_env

SHAPES = [(128, 768, 768), (128, 768, 3072), (128, 3072, 768), (4096, 768, 3072), (4096, 3072, 768)]


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
    rows = ["| threads | rows x in -> out | NumPy float32 | PyTorch float32 | npformer int8 |", "|---|---|---|---|---|"]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        for m, k, n in SHAPES:
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            q = npformer.QuantizedTensor.from_float(w)
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            runs = args.runs if m < 1000 else max(3, args.runs // 5)
            with threadpool_limits(threads, user_api="blas"):
                t_np, _ = median_ms(lambda: x @ w.T, runs)
            t_torch, _ = median_ms(lambda: torch.nn.functional.linear(tx, tw), runs)
            with threadpool_limits(1, user_api="blas"):
                t_q, _ = median_ms(lambda: q.matmul(x), runs)
            ops = 2 * m * k * n / 1e9
            rows.append(f"| {threads} | {m} x {k} -> {n} | {ops / t_np * 1e3:.0f} | {ops / t_torch * 1e3:.0f} | "
                        f"{ops / t_q * 1e3:.0f} |")
            print(rows[-1])
    append_results("Matrix products (GFLOP/s; GOP/s for int8)", "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
                   f"python benchmarks/bench_gemm.py --runs {args.runs}",
                   "Median of repeated calls; higher is better. int8 includes quantizing the activations.\n\n"
                   + "\n".join(rows))


if __name__ == "__main__":
    main()
