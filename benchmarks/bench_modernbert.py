"""ModernBERT at long inputs: time and peak memory against Transformers, and the unpadded batch.

A ModernBERT-base-sized model (hidden 768, 22 layers, 12 heads, GeGLU 1,152, a 128-token window,
every third layer global; random-init, written once to a temporary directory) runs one input of
512, 2,048 and 8,192 tokens (batch 1): npformer float32 and int8, Transformers float32 with its
``sdpa`` attention, each in a fresh process, two threads. Reported: the median time of the passes
after a warm-up and the peak RSS above what the process held once the model was loaded (the
weights), so the column is what a pass adds. Then a mixed batch (64 texts of 16 to 2,048 tokens,
lengths drawn once): npformer's unpadded pass against its padded one (the same model, the
attention-probabilities path that pads every text to the longest), in the same process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_modernbert.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_results, median_ms, peak_rss_bytes, require_clean_blas_env, run_worker  # noqa: E402

MODEL = Path(tempfile.gettempdir()) / "npformer-bench-modernbert-base"
BASE = dict(
    vocab_size=50368,
    hidden_size=768,
    intermediate_size=1152,
    num_hidden_layers=22,
    num_attention_heads=12,
    local_attention=128,
    global_attn_every_n_layers=3,
    max_position_embeddings=8192,
)
LENGTHS = (512, 2048, 8192)
RUNS = {512: 5, 2048: 3, 8192: 2}


def make_model() -> None:
    if (MODEL / "model.safetensors").is_file():
        return
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.ModernBertModel(transformers.ModernBertConfig(**BASE)).eval()
    model.save_pretrained(MODEL, safe_serialization=True)


def rss_now() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def worker(engine: str, length: int) -> dict:
    import numpy as np

    ids = np.random.default_rng(0).integers(100, 50000, (1, length))
    mask = np.ones_like(ids)
    if engine == "torch":
        import torch
        import transformers

        torch.set_num_threads(2)
        model = transformers.AutoModel.from_pretrained(MODEL, attn_implementation="sdpa").eval()
        feeds = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}

        def run():
            with torch.no_grad():
                model(**feeds)
    else:
        import npformer

        npformer.set_num_threads(2)
        model = npformer.AutoModel.from_pretrained(MODEL, dtype=engine)

        def run():
            model(ids, mask)

    loaded = rss_now()
    ms, times = median_ms(run, RUNS[length], warmup=1)
    return {"ms": ms, "times": times, "above_weights_mb": (peak_rss_bytes() - loaded) / 1e6, "loaded_mb": loaded / 1e6}


def mixed_worker() -> dict:
    import numpy as np

    import npformer
    from npformer.models.encoder import Encoder

    npformer.set_num_threads(2)
    model = npformer.AutoModel.from_pretrained(MODEL)
    rng = np.random.default_rng(0)
    lengths = rng.integers(16, 2049, 64)
    ids = np.zeros((64, lengths.max()), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n], mask[i, :n] = rng.integers(100, 50000, n), 1
    model(ids[:2, :64], mask[:2, :64])
    t0 = time.perf_counter()
    unpadded = model(ids, mask).last_hidden_state
    t1 = time.perf_counter()
    padded = Encoder.__call__(model, ids, mask).last_hidden_state  # the padded pass, every text to the longest
    t2 = time.perf_counter()
    real = mask.astype(bool)
    return {
        "unpadded_s": t1 - t0,
        "padded_s": t2 - t1,
        "tokens": int(lengths.sum()),
        "padded_tokens": int(ids.size),
        "max_abs_diff": float(np.abs(unpadded[real] - padded[real]).max()),
    }


def main() -> None:
    require_clean_blas_env()
    make_model()
    rows = [
        "| tokens | engine | ms (median) | peak RSS above the weights (MB) | time vs Transformers | memory vs Transformers |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for length in LENGTHS:
        found = {e: run_worker(Path(__file__), [e, str(length)]) for e in ("torch", "float32", "int8")}
        print(length, json.dumps(found), flush=True)
        base = found["torch"]
        for engine, r in found.items():
            if "error" in r:
                rows.append(f"| {length} | {engine} | error: {r['error']} | | | |")
                continue
            ratio = r["ms"] / base["ms"] if "ms" in base else float("nan")
            memory = r["above_weights_mb"] / base["above_weights_mb"] if "above_weights_mb" in base else float("nan")
            name = "Transformers sdpa" if engine == "torch" else f"npformer {engine}"
            rows.append(f"| {length} | {name} | {r['ms']:.0f} | {r['above_weights_mb']:.0f} | {ratio:.2f}x | {memory:.2f}x |")
    mixed = run_worker(Path(__file__), ["mixed", "0"])
    print(json.dumps(mixed), flush=True)
    body = "\n".join(rows) + "\n\n"
    if "error" in mixed:
        body += f"Mixed batch: error {mixed['error']}\n"
    else:
        body += (
            f"Mixed batch (64 texts, 16-2,048 tokens: {mixed['tokens']:,} tokens, {mixed['padded_tokens']:,} "
            f"once padded): unpadded {mixed['unpadded_s']:.1f} s, padded {mixed['padded_s']:.1f} s, "
            f"{mixed['padded_s'] / mixed['unpadded_s']:.2f}x faster unpadded (largest difference between the "
            f"two passes' states {mixed['max_abs_diff']:.1e}).\n"
        )
    append_results(
        "ModernBERT-base at 512-8,192 tokens and a mixed batch",
        "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_modernbert.py",
        body,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", nargs=2)
        engine, length = parser.parse_args().worker
        print(json.dumps(mixed_worker() if engine == "mixed" else worker(engine, int(length))))
    else:
        main()
