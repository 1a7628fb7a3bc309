"""Few-shot heads on frozen features: fitted with scikit-learn, saved without pickle, loaded by
every text-classification entry point with the in-memory fit's probabilities (1e-6)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import npformer
from conftest import read_sst2
from npformer.few_shot import fit_head
from npformer.models.feature_head import FeatureRecipe

import sklearn  # noqa: F401 (the test extra: a missing one fails)


def sample(per_class: int, seed: int = 0):
    texts, labels = read_sst2("train")
    rng = np.random.default_rng(seed)
    labels = np.array(labels)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in (0, 1)])
    return [texts[i] for i in chosen], ["negative" if labels[i] == 0 else "positive" for i in chosen]


@pytest.mark.parametrize("features, normalize", [("pooled", False), ("layers:-1,-2,0", True), ("cls", False)])
def test_saved_head_gives_the_in_memory_probabilities(minilm_dir, tmp_path, features, normalize):
    texts, labels = sample(16)
    fitted = fit_head(minilm_dir, texts, labels, tmp_path / "head", features=features, normalize=normalize)
    assert fitted.labels == ["negative", "positive"]
    dev, _ = read_sst2("dev")
    dev = dev[:40]
    pipe = npformer.pipeline("text-classification", tmp_path / "head")
    got = np.array([[d["score"] for d in sorted(row, key=lambda d: d["label"])] for row in pipe(dev, top_k=None)])
    from npformer.few_shot import encode_features
    from npformer.models.pooling import Pooling

    fx = npformer.pipeline("feature-extraction", minilm_dir)
    x = encode_features(fx, FeatureRecipe.parse(features, normalize), Pooling.from_pretrained(minilm_dir), dev)
    np.testing.assert_allclose(got, fitted.estimator.predict_proba(x.astype(np.float64)), atol=1e-6)


def test_a_head_on_32_per_class_beats_chance_by_far(minilm_dir, tmp_path):
    texts, labels = sample(32, seed=3)
    fit_head(minilm_dir, texts, labels, tmp_path / "head")
    dev, gold = read_sst2("dev")
    predicted = [r["label"] for r in npformer.pipeline("sentiment", tmp_path / "head")(dev)]
    accuracy = np.mean([p == ("positive" if g else "negative") for p, g in zip(predicted, gold)])
    assert accuracy > 0.65, accuracy  # chance is 0.5; 0.70 seen (all-MiniLM-L6-v2, C=1)


def test_three_classes_and_int_labels(minilm_dir, tmp_path):
    texts = [
        "the match ended 2-1",
        "the striker scored",
        "a goal in extra time",
        "parliament passed the bill",
        "the minister resigned",
        "elections are in may",
        "the cake needs sugar",
        "bake it for an hour",
        "whisk the eggs",
    ]
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    fitted = fit_head(minilm_dir, texts, labels, tmp_path / "head", features="mean")
    assert fitted.labels == ["0", "1", "2"]
    out = npformer.pipeline("text-classification", tmp_path / "head")(["who scored the goal?"], top_k=None)[0]
    assert len(out) == 3 and abs(sum(d["score"] for d in out) - 1) < 1e-6


@pytest.mark.parametrize(
    "texts, labels, error, message",
    [
        (["good", "fine"], ["pos", "pos"], ValueError, "one class only"),
        (["good", ""], ["pos", "neg"], ValueError, "example 1: the text is empty"),
        (["good", "bad"], ["pos"], ValueError, "2 texts but 1 labels"),
        (["good", "bad"], ["pos", None], ValueError, "example 1: the label"),
    ],
)
def test_bad_examples_are_refused(minilm_dir, tmp_path, texts, labels, error, message):
    with pytest.raises(error, match=message):
        fit_head(minilm_dir, texts, labels, tmp_path / "head")


def test_bad_features_and_existing_output(minilm_dir, tmp_path):
    with pytest.raises(ValueError, match="features must be one of"):
        fit_head(minilm_dir, ["a", "b"], [0, 1], tmp_path / "h", features="layers:")
    with pytest.raises(ValueError, match="layer 9 does not exist"):
        fit_head(minilm_dir, ["a", "b"], [0, 1], tmp_path / "h", features="layers:9")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        fit_head(minilm_dir, ["a", "b"], [0, 1], tmp_path / "taken")
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"


def test_cli_fit_head_then_sentiment(minilm_dir, tmp_path):
    texts, labels = sample(8, seed=5)
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t.strip()}\t{lab}\n" for t, lab in zip(texts, labels)))
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "npformer.cli", *a],
        capture_output=True,
        text=True,
        timeout=300,
    )
    proc = run(
        "fit-head",
        "--model",
        str(minilm_dir),
        "--train",
        str(train),
        "--text-column",
        "sentence",
        "--output",
        str(tmp_path / "head"),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["labels"] == ["negative", "positive"] and summary["examples"] == 16
    proc = run("sentiment", "--model", str(tmp_path / "head"), "a gorgeous, moving film", "a dull mess")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    reference = npformer.pipeline("sentiment", tmp_path / "head")(["a gorgeous, moving film", "a dull mess"])
    assert [r["label"] for r in rows] == [r["label"] for r in reference]
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tgold\nfine\tpositive\n")
    proc = run(
        "fit-head", "--model", str(minilm_dir), "--train", str(bad), "--text-column", "sentence", "--output", str(tmp_path / "h2")
    )
    assert proc.returncode == 2 and "no 'label' value" in proc.stderr and "Traceback" not in proc.stderr
