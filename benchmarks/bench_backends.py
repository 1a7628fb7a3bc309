"""The two backends on real text: the built-in INT8 sentiment model on the 872 SST-2 dev sentences,
batch 32, on the Numba kernels and on the NumPy ones (``backend="numpy"``), in one process, rounds
interleaved; medians. Also how far apart their outputs are (labels, logits), beside how far int8 is
from the float32 model it came from. This is what sets the command line's one-off threshold
(``npformer.cli.ONE_OFF_TEXTS``): Numba's start-up cost against its per-text saving.

Usage (``test`` extra, ../shared beside the checkout)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_backends.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import append_results, require_clean_blas_env  # noqa: E402
from conftest import read_sst2  # noqa: E402
from helpers import float32_checkpoint  # noqa: E402
import npformer  # noqa: E402


def logits(pipe, texts: list[str]) -> np.ndarray:
    """``(len(texts), num_labels)`` raw logits, labels in name order."""
    out = pipe(texts, top_k=None, function_to_apply="none")
    return np.array([[d["score"] for d in sorted(o, key=lambda d: d["label"])] for o in out])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    require_clean_blas_env()
    texts = read_sst2("dev")[0]
    pipes = {backend: npformer.pipeline("sentiment", backend=backend, batch_size=32) for backend in ("numba", "numpy")}
    times: dict[str, list[float]] = {backend: [] for backend in pipes}
    out = {}
    for _ in range(args.rounds + 1):  # the first round warms up and is not timed
        for backend, pipe in pipes.items():
            t0 = time.perf_counter()
            out[backend] = logits(pipe, texts)
            times[backend].append(time.perf_counter() - t0)
    float32 = logits(npformer.pipeline("sentiment", float32_checkpoint(Path(tempfile.mkdtemp())), batch_size=32), texts)
    numba, numpy_ = out["numba"], out["numpy"]
    rows = ["| backend | s for the set (median) | ms per text |", "|---|---|---|"]
    for backend, t in times.items():
        med = statistics.median(t[1:])
        rows.append(f"| {backend} | {med:.2f} ({min(t[1:]):.2f}-{max(t[1:]):.2f}) | {med / len(texts) * 1e3:.2f} |")
    body = "\n".join(
        [f"- built-in INT8 model, {len(texts)} SST-2 dev sentences, batch 32, {args.rounds} rounds", ""]
        + rows
        + [
            "",
            f"- labels equal on the two backends: {(numba.argmax(1) == numpy_.argmax(1)).mean():.2%}; "
            f"max logit difference {np.abs(numba - numpy_).max():.3f}",
            f"- int8 (Numba) against the float32 model it came from: max logit difference "
            f"{np.abs(numba - float32).max():.3f}, "
            f"labels equal {(numba.argmax(1) == float32.argmax(1)).mean():.2%}",
        ]
    )
    append_results(
        "Backends: Numba and NumPy on SST-2 dev (bench_backends.py)",
        f"python benchmarks/bench_backends.py --rounds {args.rounds}",
        body,
    )


if __name__ == "__main__":
    main()
