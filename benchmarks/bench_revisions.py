"""A/B speed check of two npformer revisions on the encoder (a refactor must not slow it down).

Each revision is checked out into a temporary git worktree; its encoder (random-init DistilBERT-base,
seq 128 or ``--seq``, float32 and int8, batch 1 and 32, 2 threads) runs in fresh processes that import npformer
from that worktree, interleaved round by round so both revisions see the same machine drift.
Reports per-round medians (ms) and the ratio of medians; writes a section to RESULTS.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_revisions.py BASE [NEW] [--rounds 3]
        [--only int8:32 ...] [--seq 128]

BASE / NEW are git revisions (NEW defaults to the working tree as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, append_results, require_clean_blas_env

CACHE = Path(os.environ.get("NPFORMER_BENCH_CACHE", Path.home() / ".cache" / "npformer" / "bench"))
MODEL = CACHE / "distilbert-base"
WORKER = """
import json, sys, time, statistics
import numpy as np
import npformer
assert npformer.__file__.startswith(sys.argv[1]), npformer.__file__
model = npformer.AutoModel.from_pretrained(sys.argv[2], dtype=sys.argv[3])
batch, runs, seq = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
ids = np.random.default_rng(0).integers(1000, 30000, size=(batch, seq))
mask = np.ones_like(ids)
start = time.perf_counter()
while time.perf_counter() - start < 3.0:
    model(ids, mask)
times = []
for _ in range(runs):
    t0 = time.perf_counter(); model(ids, mask); times.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({"ms": statistics.median(times)}))
"""


def prepare_model() -> None:
    if (MODEL / "model.safetensors").exists():
        return
    import torch
    import transformers

    config = transformers.DistilBertConfig(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072)
    torch.manual_seed(0)
    transformers.DistilBertModel(config).eval().save_pretrained(MODEL, safe_serialization=True)


def checkout(rev: str | None, into: Path) -> Path:
    """A directory holding revision ``rev``'s npformer (the working tree itself for None)."""
    if rev is None:
        return ROOT
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), rev], check=True, capture_output=True)
    return into


def measure(tree: Path, dtype: str, batch: int, runs: int, seq: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(tree / "npformer"), str(MODEL), dtype, str(batch), str(runs), str(seq)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])["ms"]


def main() -> None:
    require_clean_blas_env()
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("new", nargs="?")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=[], metavar="DTYPE:BATCH", help="e.g. int8:32 (default: all)")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    args = parser.parse_args()
    prepare_model()
    names = {"base": args.base, "new": args.new or "working tree"}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"base": checkout(args.base, Path(tmp) / "base"), "new": checkout(args.new, Path(tmp) / "new")}
        try:
            rows = [
                "| dtype | batch | base per round (ms) | new per round (ms) | new / base (medians) |",
                "|---|---|---|---|---|",
            ]
            for dtype in ("float32", "int8"):
                for batch, runs in ((1, 30), (32, 5)):
                    if args.only and f"{dtype}:{batch}" not in args.only:
                        continue
                    times = {"base": [], "new": []}
                    for r in range(args.rounds):
                        for side in ("base", "new") if r % 2 == 0 else ("new", "base"):
                            times[side].append(measure(trees[side], dtype, batch, runs, args.seq))
                    ratio = statistics.median(times["new"]) / statistics.median(times["base"])
                    rows.append(
                        f"| {dtype} | {batch} | {', '.join(f'{t:.1f}' for t in times['base'])} | "
                        f"{', '.join(f'{t:.1f}' for t in times['new'])} | {ratio:.3f} |"
                    )
                    print(rows[-1], flush=True)
        finally:
            for side, tree in trees.items():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    body = (
        f"base = `{names['base']}`, new = `{names['new']}`; random-init DistilBERT-base, seq {args.seq}, 2 threads; "
        f"each cell a fresh process (3 s of untimed passes, then the median of the timed ones), rounds "
        f"interleaved.\n\n" + "\n".join(rows)
    )
    append_results(
        "Revision A/B: encoder speed before and after a change",
        f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_revisions.py {args.base} "
        f"{args.new or ''} --rounds {args.rounds}".rstrip()
        + (f" --only {' '.join(args.only)}" if args.only else "")
        + (f" --seq {args.seq}" if args.seq != 128 else ""),
        body,
    )


if __name__ == "__main__":
    main()
