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
  normalized; WordPiece with MPNet's template) on the STS-B dev sentences;
* xlmr-classify: an XLM-R-base-sized sequence classifier (random init; a SentencePiece Unigram
  tokenizer trained on WikiText-2 by tests/helpers.py, 2,000 pieces where XLM-R has 250,002: the
  embedding lookup is the only part that size changes) on the SST-2 dev sentences;
* modernbert-classify: a ModernBERT-base-sized sequence classifier (22 layers, 768 wide, GeGLU of
  1,152, local attention 128 on two layers of three; random init, GPT-2's BPE) on the SST-2 dev
  sentences (PyTorch with ``sdpa`` attention);
* electra-ner: an ELECTRA-base-sized token classifier (9 labels, CoNLL-2003's count; WordPiece of
  bert-base-cased) on the first 250 WikiText-2 paragraphs of at most 80 words (headings left out);
  npformer's pipeline returns each token's entity (``aggregation_strategy="none"``), the other
  engines a softmax and argmax per token;
* albert-qa: an ALBERT-base-sized QA model (embedding 128, 12 layers sharing one block; Unigram) on
  the first 150 SQuAD v1.1 dev questions with their contexts, windows of 384 tokens with stride
  128; npformer's pipeline does Transformers' span search, the other engines the best span of
  at most 15 tokens per window.

The targets table holds issue 32's targets: npformer int8 at most 0.77x ONNX Runtime int8's time,
float32 at most 0.91x ONNX Runtime float32's, on every row; bfloat16 (``dtype="bfloat16"``, on a CPU
with AVX512_BF16) at least 1.6x npformer float32's speed (0.625x its time).

Batch 32: the whole set, every engine sorting by token length and padding each batch to its
longest (npformer's pipelines do this themselves; ONNX Runtime and PyTorch get the same sort here;
sentence-transformers sorts by itself); reported as seconds for the set. Batch 1: ms per sentence
over the first 200 sentences. Each (job, engine) runs in a fresh process with 2 threads, rounds
interleaved; medians over rounds. Engines ending in ``@avx2`` run with ``NPFORMER_ISA=avx2``.

Usage (``test`` + ``bench`` extras, ../shared beside the checkout, MiniLM fetched)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_pipelines.py [--rounds 3] \
        [--jobs roberta-classify albert-qa ...] [--engines npformer-int8 ort-int8 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import append_results, minilm, require_clean_blas_env, run_worker  # noqa: E402

THREADS = 2
BATCH = 32
LATENCY_N = 200  # texts run one per call (50 for the NER and QA jobs, whose texts are longer)
CACHE = Path(os.environ.get("NPFORMER_BENCH_CACHE", Path.home() / ".cache" / "npformer-bench")) / "pipelines"
ENGINES = [
    "npformer-int8",
    "ort-int8",
    "npformer-fp32",
    "npformer-bf16",
    "ort-fp32",
    "torch-fp32",
    "npformer-int8@avx2",
    "npformer-fp32@avx2",
]  # "@avx2": the worker runs with NPFORMER_ISA=avx2 (kernels compiled for Haswell)
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, init_std=0.02)
MODERNBERT_BASE = dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152, init_std=0.02)
# random-init jobs: job -> (model_type, Transformers head, npformer task, make_checkpoint's arguments)
RANDOM = {
    "roberta-classify": ("roberta", "sequence", "text-classification", BASE),
    "mpnet-embeddings": ("mpnet", None, "sentence-embeddings", BASE),
    "xlmr-classify": ("xlm-roberta", "sequence", "text-classification", BASE),
    "modernbert-classify": ("modernbert", "sequence", "text-classification", MODERNBERT_BASE),
    "electra-ner": ("electra", "token", "token-classification", {**BASE, "vocab": "bert-base-cased", "num_labels": 9}),
    "albert-qa": ("albert", "qa", "question-answering", {**BASE, "embedding_size": 128}),
}
JOBS = ("sentiment", "embeddings", *RANDOM)
CLASSIFY = ("sentiment", "roberta-classify", "xlmr-classify", "modernbert-classify")
QA_WINDOW, QA_STRIDE, QA_QUESTIONS, NER_TEXTS = 384, 128, 150, 250


def texts_of(job: str) -> list:
    """The job's inputs: sentences, paragraphs, or (question, context) pairs for QA."""
    from conftest import read_squad, read_sst2, read_stsb, read_wikitext

    if job in CLASSIFY:
        return read_sst2("dev")[0]
    if job == "albert-qa":
        return read_squad()[:QA_QUESTIONS]
    if job == "electra-ner":
        lines = [line.strip() for line in read_wikitext() if line.strip() and not line.strip().startswith("=")]
        return [line for line in lines if len(line.split()) <= 80][:NER_TEXTS]
    s1, s2, _ = read_stsb()
    return s1 + s2


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
    elif job in RANDOM:
        model_type, head, task, kwargs = RANDOM[job]
        if not (fp32 / "done").is_file():
            make_checkpoint(fp32, model_type, head, **kwargs)
            if task == "sentence-embeddings":
                import sentence_transformers as st

                word = st.models.Transformer(str(fp32), max_seq_length=512)
                modules = [word, st.models.Pooling(kwargs["hidden_size"], "mean"), st.models.Normalize()]
                st.SentenceTransformer(modules=modules, device="cpu").save(str(fp32))
            (fp32 / "done").write_text("")
        loader = torch_loader(transformers, head)
    else:
        fp32 = minilm()
        loader = transformers.AutoModel
    onnx = directory / "onnx" / "model.onnx"
    if not onnx.is_file():
        export_onnx(loader.from_pretrained(fp32), directory, opset=17)
    if not onnx.with_name("model_quantized.onnx").is_file():
        quantize_onnx(onnx, "int8")
    return {"fp32": fp32, "onnx": onnx, "onnx_int8": onnx.with_name("model_quantized.onnx")}


def torch_loader(transformers, head: str | None):
    """The Transformers Auto class of a head (None: the bare encoder)."""
    return {
        None: transformers.AutoModel,
        "sequence": transformers.AutoModelForSequenceClassification,
        "token": transformers.AutoModelForTokenClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
    }[head]


def head_of(job: str) -> str | None:
    return "sequence" if job in CLASSIFY else RANDOM[job][1] if job in RANDOM else None


def qa_batches(tokenizer, pairs: list[tuple[str, str]], size: int):
    """QA windows (``QA_WINDOW`` tokens, ``QA_STRIDE`` shared) of every pair, in order of length,
    ``size`` to a batch, each padded to its longest."""
    enc = tokenizer(
        [q for q, _ in pairs],
        [c for _, c in pairs],
        truncation="only_second",
        max_length=QA_WINDOW,
        stride=QA_STRIDE,
        return_overflowing_tokens=True,
    )
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    order = sorted(range(len(enc["input_ids"])), key=lambda i: len(enc["input_ids"][i]))
    for start in range(0, len(order), size):
        chunk = [{k: enc[k][i] for k in keys} for i in order[start : start + size]]
        batch = tokenizer.pad(chunk, return_tensors="np")
        width = batch["input_ids"].shape[1]
        context = [[s == 1 for s in enc.sequence_ids(i)] for i in order[start : start + size]]
        batch["context"] = np.array([c + [False] * (width - len(c)) for c in context])
        yield batch


def best_spans(start_logits, end_logits, context, max_answer_len: int = 15):
    """Each window's best (start, end) over its context tokens: ``p_start(s) * p_end(e)``, ``s <= e < s + max_answer_len``."""
    spans = []
    for s_logits, e_logits, ctx in zip(start_logits, end_logits, context):
        ps, pe = (np.exp(x - x[ctx].max()) * ctx for x in (s_logits, e_logits))
        scores = np.triu(np.tril(np.outer(ps, pe), max_answer_len - 1))
        spans.append(np.unravel_index(scores.argmax(), scores.shape))
    return spans


def length_batches(tokenizer, texts: list[str], size: int):
    """Batches of ``size`` texts in order of token length, each padded to its longest (numpy int64)."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    for start in range(0, len(order), size):
        chunk = [texts[i] for i in order[start : start + size]]
        yield tokenizer(chunk, padding=True, truncation=True, return_tensors="np")


def engine_fn(engine: str, job: str, paths: dict[str, Path]):
    """``run(items, batch_size)`` doing the job's whole work (tokenize, forward, post-process)."""
    engine = engine.split("@")[0]  # the ISA came in through NPFORMER_ISA
    if engine.startswith("npformer"):
        import npformer

        npformer.set_num_threads(THREADS)
        dtype = {"int8": "int8", "bf16": "bfloat16"}.get(engine.rsplit("-", 1)[1], "float32")
        if job == "sentiment":
            source = "builtin:sentiment" if dtype == "int8" else paths["fp32"]
            pipe = npformer.pipeline("sentiment-analysis", model=source, batch_size=BATCH, dtype=dtype)
        else:
            task = RANDOM[job][2] if job in RANDOM else "sentence-embeddings"
            pipe = npformer.pipeline(task, model=paths["fp32"], batch_size=BATCH, dtype=dtype)
        if job == "albert-qa":
            return lambda pairs, size: pipe(
                question=[q for q, _ in pairs], context=[c for _, c in pairs], max_seq_len=QA_WINDOW, doc_stride=QA_STRIDE
            )
        return lambda texts, size: pipe(texts)  # batches of BATCH by length; one text is a batch of 1
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(paths["fp32"])  # the fast tokenizer (Rust)
    head = head_of(job)

    def post(outputs, enc):
        if head == "qa":
            return best_spans(outputs[0], outputs[1], enc["context"])
        if head in ("sequence", "token"):
            z = np.exp(outputs[0] - outputs[0].max(-1, keepdims=True))
            probs = z / z.sum(-1, keepdims=True)
            return probs if head == "sequence" else (probs.argmax(-1), probs.max(-1))
        mask = enc["attention_mask"]
        summed = (outputs[0] * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
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
            return post(session.run(None, {n: enc[n].astype(np.int64) for n in names}), enc)
    else:
        import torch

        torch.set_num_threads(THREADS)
        if head is None:
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(paths["fp32"]), device="cpu")
            return lambda texts, size: st.encode(texts, batch_size=size)
        attention = {"attn_implementation": "sdpa"} if job == "modernbert-classify" else {}
        model = torch_loader(transformers, head).from_pretrained(paths["fp32"], **attention).eval()
        wanted = ("input_ids", "attention_mask", "token_type_ids")

        def forward(enc):
            with torch.inference_mode():
                out = model(**{k: torch.from_numpy(v) for k, v in enc.items() if k in wanted})
            return post([t.numpy() for t in out.values()], enc)

    if head == "qa":
        return lambda pairs, size: [forward(enc) for enc in qa_batches(tokenizer, pairs, size)]
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
    latency_n = 50 if job in ("electra-ner", "albert-qa") else LATENCY_N
    for text in texts[:latency_n]:
        run([text], 1)
    latency_ms = (time.perf_counter() - t0) / latency_n * 1e3
    return {"batch_s": batch_s, "latency_ms": latency_ms, "n": len(texts)}


def target_cell(ratio: float, goal: float) -> str:
    """``0.81x: missed by 5%`` / ``0.70x: met``: npformer's time over the other engine's against the target."""
    return f"{ratio:.2f}x: met" if ratio <= goal else f"{ratio:.2f}x: missed by {(ratio / goal - 1) * 100:.0f}%"


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
            ("npformer-bf16", "npformer-fp32"),
            ("npformer-bf16", "ort-fp32"),
        ):
            if (job, ours) in med and (job, theirs) in med:
                a, b = med[job, ours], med[job, theirs]
                ratios.append(f"| {job} | {ours} vs {theirs} | {b[0] / a[0]:.2f}x | {b[1] / a[1]:.2f}x |")
    targets = ["", "| job | target | batch 32 | batch 1 |", "|---|---|---|---|"]
    for job in args.jobs:
        for ours, theirs, goal in (
            ("npformer-int8", "ort-int8", 0.77),
            ("npformer-fp32", "ort-fp32", 0.91),
            ("npformer-bf16", "npformer-fp32", 0.625),  # at least 1.6x npformer float32
        ):
            if (job, ours) in med and (job, theirs) in med:
                cells = [target_cell(med[job, ours][i] / med[job, theirs][i], goal) for i in (0, 1)]
                targets.append(f"| {job} | {ours}'s time at most {goal}x {theirs}'s | {cells[0]} | {cells[1]} |")
    body = "\n".join(
        [f"- kernels: {kernels}", f"- {args.rounds} rounds, medians; threads {THREADS}", ""] + rows + ratios + targets
    )
    append_results(
        "Pipelines end to end (bench_pipelines.py)",
        f"python benchmarks/bench_pipelines.py --rounds {args.rounds} "
        f"--jobs {' '.join(args.jobs)} --engines {' '.join(args.engines)}",
        body,
    )


if __name__ == "__main__":
    main()
