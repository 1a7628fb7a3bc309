"""``npformer fit-head``: fit a logistic-regression head on a frozen encoder's features, from a
few labelled texts, and save it as a checkpoint every text-classification entry point loads.

Fitting uses scikit-learn's ``LogisticRegression`` (lbfgs, multinomial; the ``train`` extra:
``pip install ".[train]"`` in npformer's repository); running the saved head needs only npformer
(:class:`npformer.models.feature_head.FeatureHeadClassifier`). The recipe is the feature-based
approach of Devlin et al. (2019, section 5.3) and of SetFit's frozen-body baseline (Tunstall et
al. 2022): a linear probe on sentence features.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import save_file

from npformer.extras import require_extra
from npformer.files import read_json
from npformer.hub import resolve
from npformer.models.feature_head import CONFIG_KEY, HEAD_FILE, FeatureRecipe
from npformer.models.pooling import Pooling
from npformer.pipelines import pipeline

ENCODER_FILES = (
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "README.md",
)


@dataclass
class FittedHead:
    """What :func:`fit_head` returns: the checkpoint ``directory``, the class names in label order
    (``labels``), the training ``features`` ``(n, dim) float32`` and the fitted scikit-learn model."""

    directory: Path
    labels: list[str]
    features: np.ndarray
    estimator: object


def check_examples(texts: Sequence, labels: Sequence) -> list[str]:
    """The class names, sorted, after checking ``texts`` (non-empty str) and ``labels`` (str or int,
    one per text, at least two classes). Raises ``ValueError`` naming the example."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels: give one label per text")
    for i, (text, label) in enumerate(zip(texts, labels)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"example {i}: the text is empty or not a string ({text!r})")
        if not isinstance(label, (str, int)) or isinstance(label, bool) or (isinstance(label, str) and not label.strip()):
            raise ValueError(f"example {i}: the label must be a non-empty string or an integer, got {label!r}")
    classes = sorted({str(label) for label in labels})
    if len(classes) < 2:
        raise ValueError(
            f"the examples hold one class only ({classes[0] if classes else 'none'}); a classifier needs at least two"
        )
    return classes


def encode_features(pipe, recipe: FeatureRecipe, pooling: Pooling, texts: Sequence[str]) -> np.ndarray:
    """``(len(texts), dim) float32`` features of ``texts``, cut to the model's maximum length as the
    text-classification pipeline cuts them."""
    encodings = pipe.encode_one_window([(t, None) for t in texts], truncation=True)
    rows = pipe.forward(encodings, lambda ids, mask, types: recipe.features(pipe.model, pooling, ids, mask, types))
    return np.stack(rows).astype(np.float32)


def fit_head(  # noqa: PLR0913 - fit-head's flags
    model: str | Path,
    texts: Sequence[str],
    labels: Sequence,
    output: str | Path,
    *,
    features: str = "pooled",
    normalize: bool = False,
    C: float = 1.0,
    max_iter: int = 2000,
    batch_size: int = 32,
    overwrite: bool = False,
    revision: str | None = None,
) -> FittedHead:
    """Embed ``texts`` with ``model`` (frozen, float32), fit a logistic regression to ``labels``,
    and write ``output``: the encoder's files, ``config.json`` with ``id2label`` and the recipe,
    and ``head.safetensors``. ``npformer.pipeline("text-classification", model=output)`` loads it.

    Args:
        model: encoder checkpoint directory or Hub id (a sentence-transformers model for ``pooled``).
        texts: the examples' texts.
        labels: one label per text (str or int; the classes are sorted by their str).
        output: new checkpoint directory (must not exist, unless ``overwrite``).
        features: ``"pooled"``, ``"cls"``, ``"mean"`` or ``"layers:LIST"`` (see :class:`FeatureRecipe`).
        normalize: L2-normalize the features.
        C: inverse regularization strength of the logistic regression.

    Raises:
        ImportError: scikit-learn is missing (one line naming ``npformer[train]``).
        ValueError: bad examples (empty text, one class), features or arguments.
        FileExistsError: ``output`` exists and ``overwrite`` is False.
    """
    require_extra("train", "sklearn")
    from sklearn.linear_model import LogisticRegression

    classes = check_examples(texts, labels)
    recipe = FeatureRecipe.parse(features, normalize)
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; choose a new directory or pass overwrite=True (--overwrite)")
    if not isinstance(C, (int, float)) or not C > 0:
        raise ValueError(f"C must be a positive number, got {C!r}")
    directory = resolve(model, revision)
    pipe = pipeline("feature-extraction", directory, batch_size=batch_size)
    recipe.check(pipe.config.num_hidden_layers, str(directory / "config.json"))
    pooling = Pooling.from_pretrained(directory)
    x = encode_features(pipe, recipe, pooling, texts)
    y = np.array([classes.index(str(label)) for label in labels])
    estimator = LogisticRegression(C=C, max_iter=max_iter).fit(x.astype(np.float64), y)
    coef, intercept = estimator.coef_, estimator.intercept_
    if len(classes) == 2:  # scikit-learn keeps one row, for class 1; softmax([0, z]) = [1 - s(z), s(z)]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    write_checkpoint(
        directory, output, recipe, classes, coef, intercept, overwrite, {"examples": len(texts), "C": C, "encoder": str(model)}
    )
    return FittedHead(output, classes, x, estimator)


def write_checkpoint(
    encoder_dir: Path, output: Path, recipe: FeatureRecipe, classes: list[str], coef, intercept, overwrite: bool, training: dict
) -> None:
    """Write the checkpoint beside ``output`` and rename it into place when complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        for name in ENCODER_FILES:
            if (encoder_dir / name).is_file():
                shutil.copyfile(encoder_dir / name, temp / name)
        for sub in (p for p in encoder_dir.iterdir() if p.is_dir() and (p / "config.json").is_file()):
            shutil.copytree(sub, temp / sub.name)  # sentence-transformers' module folders (pooling, ...)
        config = read_json(encoder_dir / "config.json")
        config.update(
            {
                "architectures": ["NpformerFeatureHeadClassifier"],
                "id2label": {str(i): c for i, c in enumerate(classes)},
                "label2id": {c: i for i, c in enumerate(classes)},
                "problem_type": "single_label_classification",
                CONFIG_KEY: {**recipe.to_json(), "training": training},
            }
        )
        (temp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_file(
            {
                "coef": np.ascontiguousarray(coef, dtype=np.float32),
                "intercept": np.ascontiguousarray(intercept, dtype=np.float32),
            },
            str(temp / HEAD_FILE),
        )
        if output.exists() and overwrite:
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        temp.rename(output)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
