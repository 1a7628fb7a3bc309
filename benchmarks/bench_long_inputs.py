"""Long inputs stay bounded: QA time per MB of context, one 10 MB sentiment line, tokenizer memory.

The issue's measurements before the fix: QA on a long context was quadratic (1 MB 14 s, 2 MB 30 s,
4 MB 102 s; the duplicate-answer scan), sentiment on a 10 MB line took 3 minutes and 750 MB
(~3,400 windows computed to keep one), the tokenizer took ~300 bytes per input character.

Each measurement runs in a fresh process (peak RSS is the process's VmHWM). QA uses a small
random-init BERT QA model (hidden 64, 2 layers), so that the pipeline's own work, not the encoder,
dominates; sentiment uses the built-in INT8 model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_long_inputs.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED, append_results, peak_rss_bytes, require_clean_blas_env, run_worker  # noqa: E402

SIZES_MB = (0.5, 1, 2, 4)


def wiki_text(n_bytes: int) -> str:
    lines = (SHARED / "data" / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()
    text, i = [], 0
    size = 0
    while size < n_bytes:
        text.append(lines[i % len(lines)])
        size += len(lines[i % len(lines)]) + 1
        i += 1
    return " ".join(text)[:n_bytes]


def worker(kind: str, arg: str) -> dict:
    import npformer

    if kind == "qa":
        context = wiki_text(int(float(arg) * 1e6))
        qa = npformer.pipeline("question-answering", Path(tempfile.gettempdir()) / "npformer-bench-qa", batch_size=32)
        qa(question="Who?", context="Someone.")  # compiled kernels loaded
        t0 = time.perf_counter()
        answer = qa(question="Who was the first king of the country?", context=context)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "answer": answer["answer"][:40], "peak_rss_mb": peak_rss_bytes() / 1e6}
    if kind == "sentiment":
        clf = npformer.pipeline("sentiment-analysis")
        clf("warm up")
        line = "awful boring film. " * (10_000_000 // 19)
        t0 = time.perf_counter()
        result = clf([line, "a wonderful, moving film"])
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "results": result, "peak_rss_mb": peak_rss_bytes() / 1e6}
    if kind == "tokenizer":
        import tracemalloc

        tok = npformer.Tokenizer.from_pretrained(ROOT / "npformer" / "builtin" / "sentiment")
        text = "!" * 10_000_000
        tracemalloc.start()
        t0 = time.perf_counter()
        pieces = tok.pieces(text)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        return {"seconds": seconds, "tokens": len(pieces), "bytes_per_char": peak / len(text)}
    raise ValueError(kind)


def main() -> None:
    require_clean_blas_env()
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import make_checkpoint

    qa_dir = Path(tempfile.gettempdir()) / "npformer-bench-qa"
    if not (qa_dir / "model.safetensors").exists():
        make_checkpoint(
            qa_dir,
            "bert",
            "qa",
            vocab="bert-base-uncased",
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
        )
    rows = ["| job | input | time (s) | s per MB | peak RSS (MB) |", "|---|---|---|---|---|"]
    for mb in SIZES_MB:
        r = run_worker(Path(__file__), ["qa", str(mb)])
        if "error" in r:
            rows.append(f"| QA, random BERT h=64 | {mb} MB context | failed: {r['error']} | | |")
            continue
        rows.append(
            f"| QA, random BERT h=64 | {mb} MB context | {r['seconds']:.2f} | {r['seconds'] / mb:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    r = run_worker(Path(__file__), ["sentiment", "0"])
    rows.append(
        f"| sentiment, built-in INT8 | one 10 MB line + a short text | {r.get('seconds', float('nan')):.2f} | "
        f"| {r.get('peak_rss_mb', float('nan')):.0f} |"
    )
    t = run_worker(Path(__file__), ["tokenizer", "0"])
    tokenizer = (
        f"{t['seconds']:.1f} s, peak {t['bytes_per_char']:.1f} bytes per input character (tracemalloc)"
        if "error" not in t
        else f"failed: {t['error']}"
    )
    body = "\n".join(rows) + (
        f"\n\nTokenizer on 10 MB of `!` (10 M tokens): {tokenizer}.\n\n"
        f"Sentiment results: `{json.dumps(r.get('results', r.get('error')))}`\n"
    )
    append_results(
        "Long inputs (QA scaling, 10 MB sentiment line, tokenizer memory)",
        "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_long_inputs.py",
        body,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3])))
    else:
        main()
