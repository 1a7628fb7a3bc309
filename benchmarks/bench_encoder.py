"""Encoder speed and memory: npformer (float32, int8) vs PyTorch eager (float32, dynamic int8) vs
ONNX Runtime (float32, dynamic int8), DistilBERT-base and BERT-base shapes, in one run.

Random weights with the public configs (distilbert-base-uncased, bert-base-uncased), seq_len 128,
batch 1 and 32, 2 threads everywhere. Each (engine, model, batch) runs in a fresh process so its
peak RSS (VmHWM, bytes) is its own; time is the median of repeated forward passes (ms).
Ratios compare engines measured in this same run. Each (engine, model, batch) runs in several
interleaved rounds: on this VM one engine's speed can change between processes (ONNX Runtime
float32 DistilBERT was seen at 60 ms in one process and 146 ms in the next). Writes a section to benchmarks/RESULTS.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_encoder.py

Needs the ``bench`` extra (onnxruntime, onnx, threadpoolctl) and the ``test`` extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from common import append_results, median_ms, peak_rss_bytes, require_clean_blas_env, run_worker

HERE = Path(__file__).resolve()
CACHE = Path(os.environ.get("NPFORMER_BENCH_CACHE", Path.home() / ".cache" / "npformer" / "bench"))
SEQ = 128
THREADS = 2
WARMUP_S = 3.0  # seconds of untimed passes before timing, for every engine
CONFIGS = {
    "distilbert-base": (
        "distilbert",
        dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512),
    ),
    "bert-base": (
        "bert",
        dict(
            vocab_size=30522,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
        ),
    ),
}
ENGINES = [
    "npformer-fp32",
    "npformer-int8",
    "npformer-fp32@avx2",
    "npformer-int8@avx2",
    "torch-fp32",
    "torch-int8",
    "ort-fp32",
    "ort-int8",
]  # "@avx2": the worker runs with NPFORMER_ISA=avx2 (kernels compiled for Haswell)


def prepare(name: str) -> Path:
    """Random-init checkpoint (safetensors), its ONNX exports (fp32 + dynamic int8), npformer int8 copy."""
    import torch
    import transformers

    import npformer

    model_type, cfg = CONFIGS[name]
    directory = CACHE / name
    if not (directory / "model.safetensors").exists():
        config = (transformers.BertConfig if model_type == "bert" else transformers.DistilBertConfig)(**cfg)
        torch.manual_seed(0)
        model = (transformers.BertModel if model_type == "bert" else transformers.DistilBertModel)(config).eval()
        model.save_pretrained(directory, safe_serialization=True)
    if not (directory / "model.onnx").exists():
        model = transformers.AutoModel.from_pretrained(directory).eval()
        ids = torch.ones((1, SEQ), dtype=torch.long)
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            str(directory / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}},
            opset_version=17,
            dynamo=False,
        )
    if not (directory / "model.int8.onnx").exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(directory / "model.onnx"), str(directory / "model.int8.onnx"), weight_type=QuantType.QInt8)
    if not (directory / "int8" / "model.safetensors").exists():
        npformer.quantize(directory, directory / "int8")
    return directory


def worker(engine: str, name: str, batch: int, runs: int) -> dict:
    import numpy as np

    engine = engine.split("@")[0]  # the ISA came in through NPFORMER_ISA
    directory = CACHE / name
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(batch, SEQ)).astype(np.int64)
    mask = np.ones_like(ids)
    if engine.startswith("npformer"):
        import numba

        import npformer

        numba.set_num_threads(THREADS)
        path = directory / "int8" if engine.endswith("int8") else directory
        warm_up_kernels()
        baseline = current_rss_bytes()
        model = npformer.AutoModel.from_pretrained(path)
        weights = (path / "model.safetensors").stat().st_size
        run = lambda: model(ids, mask)  # noqa: E731
    elif engine.startswith("torch"):
        import torch
        import transformers

        torch.set_num_threads(THREADS)
        baseline = current_rss_bytes()
        model = transformers.AutoModel.from_pretrained(directory).eval()
        if engine.endswith("int8"):
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        weights = (directory / "model.safetensors").stat().st_size
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

        def run():
            with torch.inference_mode():
                return model(input_ids=t_ids, attention_mask=t_mask)
    else:
        import onnxruntime as ort

        baseline = current_rss_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        file = directory / ("model.int8.onnx" if engine.endswith("int8") else "model.onnx")
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        weights = file.stat().st_size
        run = lambda: session.run(None, {"input_ids": ids, "attention_mask": mask})  # noqa: E731
    ms, times = median_ms(run, runs, warmup=2, warmup_s=WARMUP_S)
    return {
        "median_ms": ms,
        "times_ms": [round(t, 2) for t in times],
        "peak_rss": peak_rss_bytes(),
        "baseline_rss": baseline,
        "weights_bytes": weights,
    }


def combine(outs: list[dict]) -> dict:
    """One engine's rounds -> median over every timed pass, the largest peak RSS, per-round medians."""
    ok = [o for o in outs if "error" not in o]
    if not ok:
        return outs[0]
    times = [t for o in ok for t in o["times_ms"]]
    best = max(ok, key=lambda o: o["peak_rss"])
    return {
        "median_ms": statistics.median(times),
        "round_medians_ms": [round(o["median_ms"], 2) for o in ok],
        "times_ms": times,
        "peak_rss": best["peak_rss"],
        "baseline_rss": best["baseline_rss"],
        "weights_bytes": best["weights_bytes"],
    }


def current_rss_bytes() -> int:
    """Resident set size now (bytes): the runtime's own memory before a model is loaded."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def warm_up_kernels() -> None:
    """Load npformer's compiled kernels (from the on-disk cache) on a tiny input."""
    import numpy as np

    import npformer
    from npformer.kernels import gemm_f32 as gemm, ops as kernels

    x = np.ones((8, 64), np.float32)
    kernels.layer_norm(x, x[0], x[0], 1e-12)
    kernels.bias_gelu_(x.copy(), x[0], False)
    kernels.bias_residual_layer_norm_(x.copy(), x[0], x, x[0], x[0], 1e-12)
    kernels.attention(x, x, x, np.ones((2, 4), np.int64), 2, np.empty((0, 0, 0, 0), np.float32))
    npformer.QuantizedTensor.from_float(x).matmul(x, x[:, 0])
    gemm.PackedMatrix(x).matmul(x, x[:, 0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=4, metavar=("ENGINE", "MODEL", "BATCH", "RUNS"))
    parser.add_argument("--models", nargs="+", default=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--runs", type=int, default=15, help="timed passes at batch 1 (a quarter at batch 32)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per engine, interleaved")
    parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    args = parser.parse_args()
    if args.worker:
        engine, name, batch, runs = args.worker
        print(json.dumps(worker(engine, name, int(batch), int(runs))))
        return
    require_clean_blas_env()
    rows = [
        "| model | batch | engine | median ms | vs npformer-fp32 | vs ort same dtype | weights MB | peak RSS MB | "
        "(peak - runtime) / weights |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    raw = {}
    for name in args.models:
        prepare(name)
        for batch in args.batches:
            runs = args.runs if batch == 1 else max(3, args.runs // 4)
            engines = args.engines
            rounds = {engine: [] for engine in engines}
            for r in range(args.rounds):  # engines interleaved, the order rotated each round
                for engine in engines[r % len(engines) :] + engines[: r % len(engines)]:
                    isa = {"NPFORMER_ISA": engine.split("@")[1]} if "@" in engine else None
                    out = run_worker(HERE, [engine, name, str(batch), str(runs)], isa)
                    rounds[engine].append(out)
                    print(name, batch, engine, out.get("median_ms", out), file=sys.stderr)
            res = {engine: combine(outs) for engine, outs in rounds.items()}
            raw[f"{name}/b{batch}"] = res
            base = res.get("npformer-fp32", {}).get("median_ms", float("nan"))
            for engine, r in res.items():
                if "error" in r:
                    rows.append(f"| {name} | {batch} | {engine} | error: {r['error'][:60]} | | | | | |")
                    continue
                ort = res.get("ort-int8" if engine.split("@")[0].endswith("int8") else "ort-fp32", {}).get(
                    "median_ms", float("nan")
                )
                rows.append(
                    f"| {name} | {batch} | {engine} | {r['median_ms']:.1f} | {r['median_ms'] / base:.2f} | "
                    f"{r['median_ms'] / ort:.2f} | {r['weights_bytes'] / 2**20:.0f} | {r['peak_rss'] / 2**20:.0f} | "
                    f"{(r['peak_rss'] - r['baseline_rss']) / r['weights_bytes']:.2f} |"
                )
    body = (
        f"seq_len {SEQ}, {THREADS} threads, random weights with the public configs; {args.rounds} rounds, "
        "each engine in a fresh process per round (engines interleaved, order rotated between rounds), "
        f"{args.runs} timed passes at batch 1 and {max(3, args.runs // 4)} at batch 32 per round after "
        f"{WARMUP_S:.0f} s of untimed passes; 'median ms' is the median over every timed pass of all rounds "
        "(per-round medians below). "
        "'vs' columns are time ratios (< 1: faster than the reference). Peak RSS (VmHWM) includes the "
        "interpreter and the engine's libraries ('runtime': RSS after imports and, for npformer, loading its "
        "compiled kernels, before the model); the last column divides what the model adds by that engine's "
        "weight file.\n\n"
        + "\n".join(rows)
        + "\n\nPer-round medians (ms):\n\n"
        + "\n".join(
            f"- {key} {engine}: {r.get('round_medians_ms', r.get('error'))}"
            for key, res in raw.items()
            for engine, r in res.items()
        )
    )
    append_results(
        "Encoder speed and memory",
        "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_encoder.py " + " ".join(sys.argv[1:]),
        body,
    )


if __name__ == "__main__":
    main()
