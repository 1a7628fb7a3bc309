"""``npformer batch`` throughput against the plain in-process pipeline, on SST-2 train sentences.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_batch.py [--rows 20000] [--no-append]

For the built-in sentiment model in float32 (its int8 weights dequantized, as bench_server.py does)
and int8: rows/s of ``npformer.pipeline`` in this process (2 threads), then of
``npformer.distributed.run`` on a ``LocalCluster`` of 1 worker x 1 thread, 1 worker x 2 threads and
2 workers x 1 thread (threads: each worker's threads per forward pass; Dask runs one partition at a
time per worker; partitions of 2,000 rows), both as a user sees it (wall time with the cluster's start and the
model loads) and over the span of the partitions' work (from the first one's start to the last one's
end). Peak RSS per worker is read from ``/proc`` by a worker-side call at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import float32_copy  # noqa: E402
from common import SHARED, append_results, require_clean_blas_env  # noqa: E402


def worker_peak_rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    require_clean_blas_env()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    import npformer
    from distributed import Client, LocalCluster

    from npformer import distributed

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    lines = (SHARED / "data/sst2/train.tsv").read_text(encoding="utf-8").splitlines()
    header, body = lines[0], lines[1 : args.rows + 1]
    (tmp / "train.tsv").write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    texts = [line.split("\t")[0] for line in body]
    (tmp / "fp32").mkdir()
    fp32 = float32_copy(tmp / "fp32")
    models = {"float32": str(fp32), "int8": "builtin:sentiment"}
    rows = [
        "| model | run | rows/s (wall, with start-up) | vs in-process | rows/s (partitions' span) | vs in-process "
        "| peak RSS per worker |",
        "|---|---|---|---|---|---|---|",
    ]
    results = {}
    for dtype, model in models.items():
        npformer.set_num_threads(2)
        pipe = npformer.pipeline("sentiment", model, batch_size=32)
        pipe(texts[:200])
        t0 = time.perf_counter()
        pipe(texts)
        plain = len(texts) / (time.perf_counter() - t0)
        rows.append(f"| {dtype} | in-process pipeline, 2 threads | {plain:.0f} | 1.00x | {plain:.0f} | 1.00x | - |")
        for workers, threads in ((1, 1), (1, 2), (2, 1)):
            t0 = time.perf_counter()
            with (
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
                Client(cluster) as client,
            ):
                out = tmp / f"out-{dtype}-{workers}x{threads}"
                summary = distributed.run(
                    distributed.Job(
                        "sentiment", [str(tmp / "train.tsv")], out, column="sentence", model=model, partition_rows=2_000
                    ),
                    distributed.Cluster(scheduler=cluster.scheduler_address, threads_per_worker=threads),
                    progress=False,
                )
                rate = summary.rows / (time.perf_counter() - t0)
                steady = summary.rows / summary.task_seconds
                peak = max(client.run(worker_peak_rss).values())
            results[(dtype, workers, threads)] = steady
            rows.append(
                f"| {dtype} | npformer batch, {workers} worker(s) x {threads} thread(s) | {rate:.0f} | "
                f"{rate / plain:.2f}x | {steady:.0f} | {steady / plain:.2f}x | {peak / 2**20:.0f} MB |"
            )
            print(rows[-1], flush=True)
        results[(dtype, "plain")] = plain
    lines = [
        f"| {d} | {results[(d, 2, 1)] / results[(d, 1, 1)]:.2f}x | {results[(d, 2, 1)] / results[(d, 1, 2)]:.2f}x | "
        f"{100 * (1 - results[(d, 2, 1)] / results[(d, 'plain')]):+.0f}% |"
        for d in models
    ]
    body_text = (
        f"{len(texts):,} SST-2 train sentences, built-in sentiment model; wall rates include the "
        f"cluster's start and the model loads.\n\n"
        + "\n".join(rows)
        + "\n\nRatios of the partitions' span rates (start-up excluded):\n\n| model | 2 workers x 1 thread / 1 worker x 1 "
        "thread | 2 x 1 / 1 worker x 2 threads | Dask overhead against the in-process pipeline (2 workers x 1 "
        "thread; negative: faster) |\n|---|---|---|---|\n" + "\n".join(lines)
    )
    print(body_text)
    print(json.dumps({f"{k}": v for k, v in results.items()}))
    if not args.no_append:
        append_results(
            "npformer batch on Dask (bench_batch.py)",
            "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_batch.py " + " ".join(sys.argv[1:]),
            body_text,
        )


if __name__ == "__main__":
    main()
