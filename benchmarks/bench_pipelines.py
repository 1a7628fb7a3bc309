"""End to end on real text (issue 15): whole pipelines, tokenizer included, against ONNX Runtime with
the Rust fast tokenizer and against PyTorch (cold start: ``bench_cold_start.py``).

Jobs (all read ../shared):
* sentiment: the built-in model on the 872 SST-2 dev sentences (npformer int8 = the shipped model;
  float32 = its weights dequantized, which ONNX Runtime and PyTorch run; ONNX Runtime int8 =
  ``quantize_dynamic`` of that export);
* embeddings: all-MiniLM-L6-v2 (mean pooling, normalized) on the 3,000 STS-B dev sentences;
* roberta-classify: a RoBERTa-base-sized sequence classifier (12 layers, 768 wide, random init, GPT-2's
  BPE) on the SST-2 dev sentences (npformer int8 = ``dtype="int8"`` of the float32 checkpoint);
* mpnet-embeddings: an MPNet-base-sized sentence-transformers model (random init, mean pooling,
  normalized; WordPiece with MPNet's template) on the STS-B dev sentences.

Batch 32: the whole set, every engine sorting by token length and padding each batch to its
longest (npformer's pipelines do this themselves; ONNX Runtime and PyTorch get the same sort here;
sentence-transformers sorts by itself); reported as seconds for the set. Batch 1: ms per sentence
over the first 200 sentences. Each (job, engine) runs in a fresh process with 2 threads, rounds
interleaved; medians over rounds. Engines ending in ``@avx2`` run with ``NPFORMER_ISA=avx2``.

Usage (``test`` + ``bench`` extras, ../shared beside the checkout, MiniLM fetched)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_pipelines.py [--rounds 3] \
        [--jobs roberta-classify mpnet-embeddings] [--engines npformer-int8 ort-int8 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, append_results, require_clean_blas_env, run_worker  # noqa: E402

THREADS = 2
BATCH = 32
LATENCY_N = 200
CACHE = Path(os.environ.get("NPFORMER_BENCH_CACHE", Path.home() / ".cache" / "npformer-bench")) / "pipelines"
ENGINES = [
    "npformer-int8",
    "ort-int8",
    "npformer-fp32",
    "ort-fp32",
    "torch-fp32",
    "npformer-int8@avx2",
    "npformer-fp32@avx2",
]  # "@avx2": the worker runs with NPFORMER_ISA=avx2 (kernels compiled for Haswell)
JOBS = ("sentiment", "embeddings", "roberta-classify", "mpnet-embeddings")
CLASSIFY = ("sentiment", "roberta-classify")  # the rest are embedding jobs
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, init_std=0.02)


def texts_of(job: str) -> list[str]:
    from conftest import read_sst2, read_stsb

    if job in CLASSIFY:
        return read_sst2("dev")[0]
    s1, s2, _ = read_stsb()
    return s1 + s2


def minilm() -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_minilm", ROOT / "scripts" / "fetch_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fetch()


def prepare(job: str) -> dict[str, Path]:
    """float32 checkpoint directory, its ONNX export and the int8 copy (made once, cached)."""
    import transformers

    from helpers import export_onnx, float32_checkpoint, make_checkpoint, quantize_onnx

    directory = CACHE / job
    fp32 = directory / "fp32"
    if job == "sentiment":
        if not (fp32 / "model.safetensors").is_file():
            fp32.mkdir(parents=True, exist_ok=True)
            float32_checkpoint(fp32)
        loader = transformers.AutoModelForSequenceClassification
    elif job == "roberta-classify":
        if not (fp32 / "model.safetensors").is_file():
            make_checkpoint(fp32, "roberta", "sequence", **BASE)
        loader = transformers.AutoModelForSequenceClassification
    elif job == "mpnet-embeddings":
        if not (fp32 / "modules.json").is_file():
            import sentence_transformers as st

            make_checkpoint(fp32, "mpnet", None, **BASE)
            word = st.models.Transformer(str(fp32), max_seq_length=512)
            st.SentenceTransformer(modules=[word, st.models.Pooling(768, "mean"), st.models.Normalize()], device="cpu").save(
                str(fp32)
            )
        loader = transformers.AutoModel
    else:
        fp32 = minilm()
        loader = transformers.AutoModel
    onnx = directory / "onnx" / "model.onnx"
    if not onnx.is_file():
        export_onnx(loader.from_pretrained(fp32), directory, opset=17)
    if not onnx.with_name("model_quantized.onnx").is_file():
        quantize_onnx(onnx, "int8")
    return {"fp32": fp32, "onnx": onnx, "onnx_int8": onnx.with_name("model_quantized.onnx")}


def length_batches(tokenizer, texts: list[str], size: int):
    """Batches of ``size`` texts in order of token length, each padded to its longest (numpy int64)."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    for start in range(0, len(order), size):
        chunk = [texts[i] for i in order[start : start + size]]
        yield tokenizer(chunk, padding=True, truncation=True, return_tensors="np")


def engine_fn(engine: str, job: str, paths: dict[str, Path]):
    """``run(texts, batch_size)`` doing the job's whole work (tokenize, forward, post-process)."""
    import numpy as np

    engine = engine.split("@")[0]  # the ISA came in through NPFORMER_ISA
    if engine.startswith("npformer"):
        import npformer

        npformer.set_num_threads(THREADS)
        if job == "sentiment":
            source = "builtin:sentiment" if engine.endswith("int8") else paths["fp32"]
            pipe = npformer.pipeline("sentiment-analysis", model=source, batch_size=BATCH)
        elif job == "roberta-classify":
            pipe = npformer.pipeline(
                "text-classification",
                model=paths["fp32"],
                batch_size=BATCH,
                dtype="int8" if engine.endswith("int8") else "float32",
            )
        else:
            pipe = npformer.pipeline(
                "sentence-embeddings",
                model=paths["fp32"],
                batch_size=BATCH,
                dtype="int8" if engine.endswith("int8") else "float32",
            )
        return lambda texts, size: pipe(texts)  # batches of BATCH by length; one text is a batch of 1
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(paths["fp32"])  # the fast tokenizer (Rust)

    def post(outputs, mask):
        if job in CLASSIFY:
            z = np.exp(outputs - outputs.max(-1, keepdims=True))
            return z / z.sum(-1, keepdims=True)
        summed = (outputs * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return summed / np.linalg.norm(summed, axis=1, keepdims=True)

    if engine.startswith("ort"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        session = ort.InferenceSession(
            str(paths["onnx_int8" if engine.endswith("int8") else "onnx"]), options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]

        def forward(enc):
            return post(session.run(None, {n: enc[n].astype(np.int64) for n in names})[0], enc["attention_mask"])
    else:
        import torch

        torch.set_num_threads(THREADS)
        if job not in CLASSIFY:
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(paths["fp32"]), device="cpu")
            return lambda texts, size: st.encode(texts, batch_size=size)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(paths["fp32"]).eval()

        def forward(enc):
            with torch.inference_mode():
                logits = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
            return post(logits, enc["attention_mask"])

    return lambda texts, size: [forward(enc) for enc in length_batches(tokenizer, texts, size)]


def worker(engine: str, job: str) -> dict:
    paths = {k: Path(v) for k, v in json.loads(os.environ["BENCH_PATHS"]).items()}
    texts = texts_of(job)
    run = engine_fn(engine, job, paths)
    run(texts[:64], BATCH)  # warm up: kernels, thread pools, caches
    for text in texts[:10]:
        run([text], 1)
    t0 = time.perf_counter()
    run(texts, BATCH)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for text in texts[:LATENCY_N]:
        run([text], 1)
    latency_ms = (time.perf_counter() - t0) / LATENCY_N * 1e3
    return {"batch_s": batch_s, "latency_ms": latency_ms, "n": len(texts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "JOB"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=ENGINES)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    require_clean_blas_env()
    from npformer.kernels.llvm_ir import HAS_AVX512, HAS_VNNI

    kernels = (
        f"default path: AVX-512 {HAS_AVX512}, VNNI {HAS_VNNI}; '@avx2' rows: NPFORMER_ISA=avx2 (Numba compiled "
        f"for Haswell: ymm FMA float32 kernel, int8 by vpmaddwd)"
    )
    paths = {job: prepare(job) for job in args.jobs}
    results: dict = {}
    for r in range(args.rounds):
        for job in args.jobs:
            env = {"BENCH_PATHS": json.dumps({k: str(v) for k, v in paths[job].items()})}
            for engine in args.engines:
                isa = {"NPFORMER_ISA": engine.split("@")[1]} if "@" in engine else {}
                out = run_worker(Path(__file__), [engine, job], {**env, **isa})
                print(r, job, engine, out, flush=True)
                results.setdefault((job, engine), []).append(out)
    rows = ["| job | engine | batch 32: s for the set | batch 1: ms per sentence |", "|---|---|---|---|"]
    med = {}
    for (job, engine), outs in results.items():
        ok = [o for o in outs if "error" not in o]
        if not ok:
            rows.append(f"| {job} | {engine} | error: {outs[0]['error']} | |")
            continue
        med[job, engine] = (statistics.median(o["batch_s"] for o in ok), statistics.median(o["latency_ms"] for o in ok))
        spread = f"{min(o['batch_s'] for o in ok):.2f}-{max(o['batch_s'] for o in ok):.2f}"
        rows.append(f"| {job} ({ok[0]['n']}) | {engine} | {med[job, engine][0]:.2f} ({spread}) | {med[job, engine][1]:.2f} |")
    ratios = ["", "| job | A vs B | B's time / A's time, batch 32 (> 1: A faster) | batch 1 |", "|---|---|---|---|"]
    for job in args.jobs:
        for ours, theirs in (
            ("npformer-int8", "ort-int8"),
            ("npformer-fp32", "ort-fp32"),
            ("npformer-fp32", "torch-fp32"),
            ("npformer-int8", "torch-fp32"),
            ("npformer-int8@avx2", "ort-int8"),
            ("npformer-fp32@avx2", "ort-fp32"),
            ("npformer-int8@avx2", "npformer-int8"),
            ("npformer-fp32@avx2", "npformer-fp32"),
        ):
            if (job, ours) in med and (job, theirs) in med:
                a, b = med[job, ours], med[job, theirs]
                ratios.append(f"| {job} | {ours} vs {theirs} | {b[0] / a[0]:.2f}x | {b[1] / a[1]:.2f}x |")
    body = "\n".join([f"- kernels: {kernels}", f"- {args.rounds} rounds, medians; threads {THREADS}", ""] + rows + ratios)
    append_results(
        "Pipelines end to end (bench_pipelines.py)",
        f"python benchmarks/bench_pipelines.py --rounds {args.rounds} "
        f"--jobs {' '.join(args.jobs)} --engines {' '.join(args.engines)}",
        body,
    )


if __name__ == "__main__":
    main()
