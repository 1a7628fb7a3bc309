"""HTTP serving under load, on loopback: ``npformer serve`` with and without dynamic batching, and a
Transformers pipeline behind the same framework (Starlette + uvicorn, torch; test-only).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_server.py [--seconds 20]
        [--clients 1,8,32,64] [--memory-requests 10000] [--no-append]

Each server runs alone, in its own process on 127.0.0.1, with 2 threads per forward pass. For
each number of clients, that many threads (each with one keep-alive connection, ``http.client``)
send single SST-2 dev sentences to ``POST /predict`` for ``--seconds`` seconds (bounded also
in requests), and the script reports requests/s, p50 and p99 latency (ms) and errors. Then 32
clients send ``--memory-requests`` requests to each npformer server, and the server's RSS is read
after the first 1,000 and at the end (``/proc/PID/status``: VmRSS, and VmHWM for the peak).

The model is the built-in INT8 sentiment model for npformer; Transformers runs the same weights
dequantized to float32 (int8 values x scales: the same function up to activation quantization),
as ``transformers.pipeline("text-classification")``, one request per call, as a user would write it.

``--job embeddings``: all-MiniLM-L6-v2 (float32, as published; fetched by scripts/fetch_minilm.py)
answering single STS-B dev sentences at TEI's ``POST /embed``, against sentence-transformers'
``encode`` (normalized) behind the same framework. Each job appends its own section.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, append_results, minilm, require_clean_blas_env  # noqa: E402

# A reference server: one model behind Starlette + uvicorn (torch; test-only), ``{model}`` made from
# sys.argv[1], answering ``{route}`` with ``{call}`` on the request's "inputs".
REFERENCE_APP = """
import sys, threading, torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route
import uvicorn
torch.set_num_threads(2)
{model}
lock = threading.Lock()
def run(inputs):
    with lock:  # one forward pass at a time, as npformer's inference thread
        return {call}
async def answer(request):
    body = await request.json()
    return JSONResponse(await run_in_threadpool(run, body["inputs"]))
async def health(request):
    return JSONResponse({{}})
app = Starlette(routes=[Route("{route}", answer, methods=["POST"]), Route("/health", health)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""
TRANSFORMERS_APP = REFERENCE_APP.format(
    model='import transformers\npipe = transformers.pipeline("text-classification", model=sys.argv[1], device=-1)',
    call="pipe(inputs, top_k=None)",
    route="/predict",
)
SENTENCE_TRANSFORMERS_APP = REFERENCE_APP.format(
    model='from sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer(sys.argv[1], device="cpu")',
    call="model.encode([inputs], normalize_embeddings=True).tolist()",
    route="/embed",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentences() -> list[str]:
    """SST-2 dev sentences (../shared/data/sst2/dev.tsv: sentence <tab> label)."""
    path = SHARED / "data" / "sst2" / "dev.tsv"
    if not path.exists():
        sys.exit(f"no SST-2 sentences at {path}")
    return [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]


def stsb_sentences() -> list[str]:
    """The STS-B dev sentences, both sides (../shared/data/stsb/dev.tsv)."""
    path = SHARED / "data" / "stsb" / "dev.tsv"
    if not path.exists():
        sys.exit(f"no STS-B sentences at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    columns = [header.index("sentence1"), header.index("sentence2")]
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    return [row[c] for c in columns for row in rows]


def float32_copy(directory: Path) -> Path:
    """The built-in model with its int8 weights dequantized, as a Transformers checkpoint."""
    from safetensors.numpy import save_file

    from npformer.hub import BUILTIN
    from npformer.quantization import SCALE_SUFFIX, read_matrix
    from npformer.weights import Weights

    src = BUILTIN["builtin:sentiment"]
    weights = Weights(src)
    out = {}
    for key in list(weights.tensors):
        if not key.endswith(SCALE_SUFFIX):
            value = read_matrix(weights, key)
            out[key] = value.dequantize() if hasattr(value, "dequantize") else value
    save_file(out, str(directory / "model.safetensors"))
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            (directory / name).write_bytes((src / name).read_bytes())
    config = json.loads((directory / "config.json").read_text())
    config.pop("quantization", None)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def start(cmd: list[str], port: int, cwd: Path | None = None) -> subprocess.Popen:
    """Start a server (in ``cwd``, which ``python -m`` puts first on ``sys.path``) and wait for /health."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, cwd=cwd
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def load(
    port: int, texts: list[str], clients: int, seconds: float, max_requests: int, on_count=None, path: str = "/predict"
) -> dict:
    """``clients`` threads posting single sentences to ``path`` until ``seconds`` pass or ``max_requests`` are sent."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    sent = [0]
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.perf_counter() < stop_at:
            with lock:
                if sent[0] >= max_requests:
                    return
                sent[0] += 1
                n = sent[0]
            body = json.dumps({"inputs": texts[i % len(texts)]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, {"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    errors[0] += 1
            if on_count is not None:
                on_count(n)
            i += clients

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors[0],
        "rps": len(lat) / wall,
        "p50_ms": 1e3 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
    }


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, bytes."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def servers_of(job: str, tmp: Path) -> tuple[dict, str]:
    """``{server name: command for a port}`` for ``job``, and the route its clients post to."""

    def serve(*flags: str):
        return lambda p: [sys.executable, "-m", "npformer.cli", "serve", "--port", str(p), "--threads", "2", *flags, "-q"]

    if job == "embeddings":
        model = minilm()
        return {
            "npformer serve (batching)": serve("--model", f"minilm={model}"),
            "npformer serve --no-batching": serve("--model", f"minilm={model}", "--no-batching"),
            "sentence-transformers + Starlette": lambda p: [sys.executable, "-c", SENTENCE_TRANSFORMERS_APP, str(model), str(p)],
        }, "/embed"
    fp32 = float32_copy(tmp)
    return {
        "npformer serve (batching)": serve(),
        "npformer serve --no-batching": serve("--no-batching"),
        "Transformers pipeline + Starlette": lambda p: [sys.executable, "-c", TRANSFORMERS_APP, str(fp32), str(p)],
    }, "/predict"


def measure(servers: dict, texts: list[str], path: str, levels: list[int], args) -> tuple[list, list]:
    """Each server alone: the load levels, then (npformer's) RSS over ``--memory-requests`` requests."""
    rows, memory = [], []
    for name, cmd in servers.items():
        port = free_port()
        proc = start(cmd(port), port)
        try:
            load(port, texts, 8, 3, 2000, path=path)  # warm-up
            for clients in levels:
                result = load(port, texts, clients, args.seconds, args.max_requests, path=path)
                result["server"] = name
                rows.append(result)
                print(json.dumps(result), flush=True)
            if name.startswith("npformer"):
                marks = {}

                def mark(n, pid=proc.pid):
                    if n in (1000, args.memory_requests):
                        marks[n] = rss(pid)[0]

                load(port, texts, 32, 3600, args.memory_requests, on_count=mark, path=path)
                time.sleep(0.5)
                now, peak = rss(proc.pid)
                first = marks.get(1000, now)
                memory.append({"server": name, "rss_1000": first, "rss_end": marks.get(args.memory_requests, now), "peak": peak})
                print(json.dumps(memory[-1]), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return rows, memory


def main() -> None:
    require_clean_blas_env()
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", choices=("sentiment", "embeddings"), default="sentiment")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", default="1,8,32,64")
    ap.add_argument("--max-requests", type=int, default=100_000, help="bound per run, whatever the time")
    ap.add_argument("--memory-requests", type=int, default=10_000)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    texts = stsb_sentences() if args.job == "embeddings" else sentences()
    levels = [int(c) for c in args.clients.split(",")]
    servers, path = servers_of(args.job, Path(tempfile.mkdtemp(prefix="bench_server_")))
    reference = list(servers)[2]
    rows, memory = measure(servers, texts, path, levels, args)
    by = {(r["server"], r["clients"]): r for r in rows}
    lines = ["| server | clients | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['clients']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )
    lines += [
        "",
        "| server | RSS after 1,000 requests | RSS after " + f"{args.memory_requests:,}" + " | change | peak RSS |",
        "|---|---|---|---|---|",
    ]
    for m in memory:
        lines.append(
            f"| {m['server']} | {m['rss_1000'] / 2**20:.0f} MB | {m['rss_end'] / 2**20:.0f} MB | "
            f"{100 * (m['rss_end'] / m['rss_1000'] - 1):+.1f}% | {m['peak'] / 2**20:.0f} MB |"
        )
    ratios = []
    for c in levels:
        a = by.get(("npformer serve (batching)", c))
        b = by.get(("npformer serve --no-batching", c))
        t = by.get((reference, c))
        if a and b and t:
            ratios.append(f"| {c} | {a['rps'] / b['rps']:.2f}x | {a['rps'] / t['rps']:.2f}x |")
    short = reference.split(" + ")[0]
    lines += ["", f"| clients | batching / no batching (requests/s) | batching / {short} |", "|---|---|---|", *ratios]
    what = (
        "Single STS-B sentences to POST /embed; all-MiniLM-L6-v2, float32"
        if args.job == "embeddings"
        else "Single SST-2 sentences to POST /predict; built-in INT8 model"
    )
    body = (
        f"{what}; {args.seconds:.0f} s per level, keep-alive connections, loopback; 2 threads per forward pass; "
        f"default limits (--max-batch-size 64, --max-wait-ms 2).\n\n" + "\n".join(lines)
    )
    print(body)
    if not args.no_append:
        command = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_server.py " + " ".join(sys.argv[1:])
        title = "HTTP server under load (bench_server.py)"
        if args.job == "embeddings":
            title = "HTTP server under load: MiniLM embeddings (bench_server.py --job embeddings)"
        append_results(title, command.strip(), body)


if __name__ == "__main__":
    main()
