"""Cold start (issue 15): wall time of fresh processes for a one-off call, from a warm disk cache.

Commands, run in interleaved rounds (each round runs every command once, so that a noisy moment of
the machine hits them alike); medians, minimum and maximum over the rounds:

* ``python -c pass`` and ``python -c "import numpy"``: the floor no change in npformer can lower;
* ``import npformer``;
* ``npformer sentiment TEXT``: the console script, built-in INT8 model, on its default backend for a
  one-off call (NumPy: no Numba to load);
* ``npformer sentiment --backend numba TEXT``: the same call on the Numba kernels (their compiled
  code loaded from Numba's cache, warmed before the rounds);
* ``npformer embed TEXT`` (all-MiniLM-L6-v2, float32), when ``scripts/fetch_minilm.py`` has fetched it.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cold_start.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import append_results, require_clean_blas_env  # noqa: E402
from npformer.hub import cache_dir  # noqa: E402 (this process only; the timed ones start fresh)

TEXT = "a gorgeous, witty, seductive movie."


def commands() -> dict[str, list[str]]:
    """Name -> argv of each timed command."""
    cli = shutil.which("npformer", path=str(Path(sys.executable).parent)) or shutil.which("npformer")
    npformer = [cli] if cli else [sys.executable, "-m", "npformer.cli"]
    out = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
        "python -c 'import npformer'": [sys.executable, "-c", "import npformer"],
        "npformer sentiment TEXT": [*npformer, "sentiment", TEXT],
        "npformer sentiment --backend numba TEXT": [*npformer, "sentiment", "--backend", "numba", TEXT],
    }
    if (cache_dir() / "all-MiniLM-L6-v2" / "model.safetensors").is_file():
        out["npformer embed TEXT (MiniLM, float32)"] = [*npformer, "embed", TEXT]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    require_clean_blas_env()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    timed = commands()
    for argv in timed.values():  # warm the disk cache and Numba's kernel cache
        subprocess.run(argv, env=env, capture_output=True, check=True)
    times: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.rounds):
        for name, argv in timed.items():
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    rows = ["| command | median s | min-max s |", "|---|---|---|"]
    rows += [f"| `{name}` | {statistics.median(t):.3f} | {min(t):.3f}-{max(t):.3f} |" for name, t in times.items()]
    body = "\n".join(
        [
            f"- {args.rounds} interleaved rounds of fresh processes, warm disk and Numba caches, "
            f"wall seconds (subprocess start to exit)",
            "",
        ]
        + rows
    )
    append_results("Cold start (bench_cold_start.py)", f"python benchmarks/bench_cold_start.py --rounds {args.rounds}", body)


if __name__ == "__main__":
    main()
