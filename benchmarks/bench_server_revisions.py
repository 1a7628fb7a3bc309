"""HTTP server throughput before and after a change: ``npformer serve`` from two git revisions, in
interleaved rounds, on loopback (the requests and the limits of ``bench_server.py``).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_server_revisions.py BASE [HEAD]
        [--clients 32] [--seconds 15] [--rounds 3] [--no-append]

Each revision is checked out with ``git worktree`` into a temporary directory and its server runs
from there (``python -m`` puts the working directory first on ``sys.path``; the same interpreter
and packages); that a process started there imports the tree's ``npformer`` is checked first. Each round starts each
server afresh, warms it up, then ``--clients`` keep-alive clients send single SST-2 dev sentences
to ``POST /predict`` for ``--seconds`` (bounded in requests too). Reported: the median over the
rounds of requests/s and p99, and the ratio HEAD / BASE in each round.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import free_port, load, sentences, start  # noqa: E402
from common import ROOT, append_results, require_clean_blas_env  # noqa: E402


def checkout(revision: str, parent: Path) -> Path:
    target = parent / revision.replace("/", "_")
    subprocess.run(["git", "worktree", "add", "--detach", str(target), revision], cwd=ROOT, check=True, capture_output=True)
    return target


def check_imports(tree: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import npformer; print(npformer.__file__)"], cwd=tree, capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        sys.exit(f"a process started in {tree} imports {found}, not the tree's npformer")


def serve_round(tree: Path, texts: list[str], clients: int, seconds: float) -> dict:
    port = free_port()
    # run from the tree: ``python -m`` puts the working directory first on sys.path, before any install
    proc = start([sys.executable, "-m", "npformer.cli", "serve", "--port", str(port), "--threads", "2", "-q"], port, cwd=tree)
    try:
        load(port, texts, 8, 3, 2000)  # warm-up
        return load(port, texts, clients, seconds, 200_000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    require_clean_blas_env()
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("head", nargs="?", default="HEAD")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    texts = sentences()
    parent = Path(tempfile.mkdtemp(prefix="bench_server_revisions_"))
    trees = {name: checkout(rev, parent) for name, rev in (("base", args.base), ("head", args.head))}
    for tree in trees.values():
        check_imports(tree)
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    try:
        for r in range(args.rounds):
            for name in ("base", "head") if r % 2 == 0 else ("head", "base"):
                result = serve_round(trees[name], texts, args.clients, args.seconds)
                runs[name].append(result)
                print(json.dumps({"round": r, "revision": name, **result}), flush=True)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    rev = {
        name: subprocess.run(
            ["git", "rev-parse", "--short", getattr(args, name)], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        for name in ("base", "head")
    }
    lines = [
        "| revision | requests/s (median of rounds) | p99 ms (median) | errors | requests/s per round |",
        "|---|---|---|---|---|",
    ]
    for name in ("base", "head"):
        rows = runs[name]
        lines.append(
            f"| {name} {rev[name]} | {statistics.median(r['rps'] for r in rows):.1f} | "
            f"{statistics.median(r['p99_ms'] for r in rows):.1f} | {sum(r['errors'] for r in rows)} | "
            + ", ".join(f"{r['rps']:.1f}" for r in rows)
            + " |"
        )
    ratios = [h["rps"] / b["rps"] for h, b in zip(runs["head"], runs["base"])]
    body = (
        f"{args.clients} clients, single SST-2 dev sentences to POST /predict, {args.seconds:.0f} s per round, "
        f"{args.rounds} interleaved rounds, each server started afresh; built-in INT8 model, 2 threads.\n\n"
        + "\n".join(lines)
        + "\n\nhead / base requests/s per round: "
        + ", ".join(f"{x:.3f}" for x in ratios)
        + f" (median {statistics.median(ratios):.3f})"
    )
    print(body)
    if not args.no_append:
        command = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_server_revisions.py " + " ".join(
            sys.argv[1:]
        )
        append_results("Server A/B: throughput before and after a change (bench_server_revisions.py)", command, body)


if __name__ == "__main__":
    main()
