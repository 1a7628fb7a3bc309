"""STS-B dev: Spearman of cosine similarity vs gold scores for all-MiniLM-L6-v2, side by side:
npformer float32, npformer int8, and sentence-transformers' own encode (the reference).

    python scripts/fetch_minilm.py && python benchmarks/eval_stsb.py

Needs sentence-transformers<5.2 (works with transformers 4.57.6) for the reference column.
Writes a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import time

import numpy as np
from common import ROOT, SHARED, append_results
from scipy.stats import spearmanr

import npformer


def read_stsb():
    s1, s2, gold = [], [], []
    with open(SHARED / "data/stsb/dev.tsv", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            s1.append(row["sentence1"])
            s2.append(row["sentence2"])
            gold.append(float(row["score"]))
    return s1, s2, np.array(gold)


def minilm_dir():
    spec = importlib.util.spec_from_file_location("fetch_minilm", ROOT / "scripts" / "fetch_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fetch()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    directory = minilm_dir()
    s1, s2, gold = read_stsb()
    rows = ["| engine | Spearman x100 | seconds (3,000 sentences) |", "|---|---|---|"]
    vectors = {}
    for dtype in ("float32", "int8"):
        pipe = npformer.pipeline("sentence-embeddings", directory, dtype=dtype, batch_size=64)
        t0 = time.perf_counter()
        a, b = pipe(s1), pipe(s2)
        seconds = time.perf_counter() - t0
        vectors[dtype] = (a, b)
        rho = spearmanr((a * b).sum(1), gold).statistic * 100
        rows.append(f"| npformer {dtype} | {rho:.2f} | {seconds:.1f} |")
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(directory), device="cpu")
        t0 = time.perf_counter()
        a = st.encode(s1, batch_size=64, normalize_embeddings=True)
        b = st.encode(s2, batch_size=64, normalize_embeddings=True)
        seconds = time.perf_counter() - t0
        rows.append(
            f"| sentence-transformers (PyTorch) | {spearmanr((a * b).sum(1), gold).statistic * 100:.2f} | {seconds:.1f} |"
        )
        diff = max(np.abs(a - vectors["float32"][0]).max(), np.abs(b - vectors["float32"][1]).max())
        rows.append(f"\nmax abs diff of embeddings, npformer float32 vs sentence-transformers: {diff:.2e}")
    except ImportError:
        rows.append("\nsentence-transformers is not installed: reference column missing")
    (a32, b32), (a8, b8) = vectors["float32"], vectors["int8"]
    cos = np.concatenate([(a32 * a8).sum(1), (b32 * b8).sum(1)])
    rows.append(f"\nmean cosine(float32, int8) over the 3,000 sentence embeddings: {cos.mean():.4f} (min {cos.min():.4f})")
    body = "\n".join(rows)
    print(body)
    if not args.no_write:
        append_results("STS-B dev, all-MiniLM-L6-v2", "python benchmarks/eval_stsb.py", body)


if __name__ == "__main__":
    main()
