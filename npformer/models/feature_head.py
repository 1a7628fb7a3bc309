"""Few-shot classifiers: a frozen encoder's features and a logistic-regression head.

As the DistilBERT and BERT model cards suggest ("hidden states ... as features for lightweight
classifiers"; Devlin et al. 2019, feature-based approach): texts are encoded once, a feature
vector is taken from the hidden states (:class:`FeatureRecipe`), and a multinomial logistic
regression, fitted by :mod:`npformer.few_shot` with scikit-learn, maps it to class logits. The
checkpoint is a plain directory: the encoder's own files, ``config.json`` with ``id2label`` and the
recipe under ``npformer_head``, and the head as tensors in ``head.safetensors`` (``coef``
``(num_labels, dim)``, ``intercept`` ``(num_labels,)``); nothing is pickled. Logits are
``features @ coef.T + intercept``; their softmax equals scikit-learn's ``predict_proba``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from npformer.models.encoder import Encoder
from npformer.models.heads import ModelOutput
from npformer.models.pooling import Pooling, l2_normalize

HEAD_FILE = "head.safetensors"
CONFIG_KEY = "npformer_head"
FEATURES = ("pooled", "cls", "mean")


@dataclass(frozen=True)
class FeatureRecipe:
    """Which features a head reads: ``kind`` ``"pooled"`` (the checkpoint's sentence-embedding
    pooling, :class:`Pooling`), ``"cls"`` (last layer, first token), ``"mean"`` (last layer, mean
    over tokens) or ``"layers"`` (the mean over tokens of each of ``layers``, concatenated; 0 is
    the embeddings' output, -1 the last layer); ``normalize`` L2-normalizes the vector."""

    kind: str = "pooled"
    layers: tuple[int, ...] = ()
    normalize: bool = False

    @classmethod
    def parse(cls, spec: str, normalize: bool = False) -> "FeatureRecipe":
        """``"pooled"``, ``"cls"``, ``"mean"`` or ``"layers:-1,-2,-3,-4"``. Raises ``ValueError``."""
        if spec in FEATURES:
            return cls(spec, (), normalize)
        kind, _, rest = spec.partition(":")
        if kind == "layers":
            try:
                layers = tuple(int(x) for x in rest.split(",") if x.strip())
            except ValueError:
                layers = ()
            if layers:
                return cls("layers", layers, normalize)
        raise ValueError(f"features must be one of {FEATURES} or 'layers:LIST' (e.g. layers:-1,-2,-3,-4), got {spec!r}")

    def to_json(self) -> dict:
        return {"features": self.kind, "layers": list(self.layers), "normalize": self.normalize}

    @classmethod
    def from_json(cls, data: dict, source: str) -> "FeatureRecipe":
        if not isinstance(data, dict) or data.get("features") not in (*FEATURES, "layers"):
            raise ValueError(f"{source}: field {CONFIG_KEY!r} must give 'features' as one of {FEATURES} or 'layers'")
        layers = data.get("layers") or []
        if (
            not isinstance(layers, list)
            or not all(isinstance(i, int) for i in layers)
            or (data["features"] == "layers") != bool(layers)
        ):
            raise ValueError(f"{source}: field {CONFIG_KEY}.layers must list integers exactly when features is 'layers'")
        return cls(data["features"], tuple(layers), bool(data.get("normalize", False)))

    def features(self, encoder: Encoder, pooling: Pooling, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        """``(batch, dim) float32`` features of one padded batch."""
        out = encoder(input_ids, attention_mask, token_type_ids, output_hidden_states=self.kind == "layers")
        if self.kind == "pooled":
            x = pooling(out.last_hidden_state, attention_mask)
        elif self.kind == "cls":
            x = out.last_hidden_state[:, 0]
        else:
            states = [out.last_hidden_state] if self.kind == "mean" else [out.hidden_states[i] for i in self.layers]
            x = np.concatenate([Pooling(("mean",))(s, attention_mask) for s in states], axis=-1)
        x = np.ascontiguousarray(x, dtype=np.float32)
        return l2_normalize(x) if self.normalize else x

    def check(self, num_hidden_layers: int, source: str) -> None:
        """Raise ``ValueError`` when a layer index is outside ``[-(N+1), N]``."""
        for i in self.layers:
            if not -(num_hidden_layers + 1) <= i <= num_hidden_layers:
                raise ValueError(
                    f"{source}: layer {i} does not exist (the encoder has {num_hidden_layers} layers; "
                    f"0 is the embeddings, -1 the last layer)"
                )


class FeatureHeadClassifier:
    """A frozen encoder, a :class:`FeatureRecipe` and a linear head: ``model(input_ids,
    attention_mask, token_type_ids).logits`` is ``(batch, num_labels) float32``, as a sequence
    classifier's (so the text-classification pipeline runs it)."""

    task = "sequence-classification"
    adapter_set = None

    def __init__(self, encoder: Encoder, recipe: FeatureRecipe, pooling: Pooling, coef: np.ndarray, intercept: np.ndarray):
        self.encoder, self.recipe, self.pooling = encoder, recipe, pooling
        self.config = encoder.config
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)  # (num_labels, dim)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)  # (num_labels,)

    @classmethod
    def load(cls, directory: Path, encoder: Encoder, config: dict) -> "FeatureHeadClassifier":
        """The head of checkpoint ``directory`` (``config`` is its parsed config.json) on ``encoder``.
        Raises ``ValueError`` naming the file for a bad recipe, a missing or mis-shaped tensor."""
        source = str(directory / "config.json")
        recipe = FeatureRecipe.from_json(config.get(CONFIG_KEY), source)
        recipe.check(encoder.config.num_hidden_layers, source)
        head_file = directory / HEAD_FILE
        if not head_file.is_file():
            raise FileNotFoundError(f"no {HEAD_FILE} in {directory}: the few-shot head's tensors are missing")
        tensors = load_file(str(head_file))
        for name in ("coef", "intercept"):
            if name not in tensors or not np.all(np.isfinite(tensors[name])):
                raise ValueError(f"{head_file}: tensor {name!r} is missing or not finite")
        coef, intercept = tensors["coef"], tensors["intercept"]
        labels = len(encoder.config.id2label) or coef.shape[0]
        if coef.ndim != 2 or coef.shape[0] != labels or intercept.shape != (labels,):
            raise ValueError(f"{head_file}: 'coef' {coef.shape} and 'intercept' {intercept.shape} do not fit {labels} labels")
        return cls(encoder, recipe, Pooling.from_pretrained(directory), coef, intercept)

    def features(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """``(batch, dim) float32`` features (see :class:`FeatureRecipe`)."""
        if attention_mask is None:
            attention_mask = np.ones_like(np.asarray(input_ids))
        return self.recipe.features(self.encoder, self.pooling, input_ids, attention_mask, token_type_ids)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None) -> ModelOutput:
        x = self.features(input_ids, attention_mask, token_type_ids)
        if x.shape[1] != self.coef.shape[1]:
            raise ValueError(f"the features have {x.shape[1]} values but the head expects {self.coef.shape[1]}")
        logits = (x.astype(np.float64) @ self.coef.T.astype(np.float64) + self.intercept).astype(np.float32)
        return ModelOutput(logits, np.empty((0, 0, 0), np.float32))
