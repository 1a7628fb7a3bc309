"""``config.json`` -> a small config object with Hugging Face's names.

The fields every encoder has are read here; which names a ``model_type`` stores them under
(DistilBERT's ``dim``...) and its own fields (activation, layer norm epsilon, token types...) come
from its architecture class (:mod:`npformer.architectures`: ``config_names``, ``config_fields``).
The validators below are shared with those classes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from npformer.architectures import architecture
from npformer.files import read_json

PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int(v, name: str, source: str) -> int:
    """``v`` if it is a positive integer, else ``ValueError`` naming ``source`` and the field."""
    if not _is_int(v) or v < 1:
        raise ValueError(f"{source}: field {name!r} must be a positive integer, got {v!r}")
    return v


def boolean(v, name: str, source: str) -> bool:
    """``v`` if it is a JSON boolean, else ``ValueError`` naming ``source`` and the field."""
    if not isinstance(v, bool):
        raise ValueError(f"{source}: field {name!r} must be true or false, got {v!r}")
    return v


def epsilon(v, source: str) -> float:
    """``v`` as a float if it is a finite number in (0, 1), else ``ValueError``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
        raise ValueError(f"{source}: field 'layer_norm_eps' must be a finite number in (0, 1), got {v!r}")
    return float(v)


def _id2label(v, source: str) -> dict[int, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"{source}: field 'id2label' must be an object {{\"0\": label, ...}}, got {v!r}")
    out = {}
    for k, label in v.items():
        if not (isinstance(k, str) and k.isdigit() or _is_int(k)) or not isinstance(label, str):
            raise ValueError(f"{source}: field 'id2label' maps {k!r} to {label!r}; expected integer ids to str labels")
        out[int(k)] = label
    if sorted(out) != list(range(len(out))):
        raise ValueError(f"{source}: field 'id2label' has ids {sorted(out)}; expected 0..{len(out) - 1}")
    return out


def _label2id(v, source: str) -> dict[str, int]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and (_is_int(i) or isinstance(i, str) and i.isdigit()) for k, i in v.items()
    ):
        raise ValueError(f"{source}: field 'label2id' must map str labels to integer ids, got {v!r}")
    return {k: int(i) for k, i in v.items()}


@dataclass
class Config:
    """Encoder hyper-parameters under the names of Hugging Face's ``BertConfig``.

    ``model_type`` is any registered architecture (:mod:`npformer.architectures`): ``"bert"``
    covers BERT, TinyBERT and MiniLM; ``"distilbert"`` is read from DistilBERT's own names (``dim``,
    ``n_layers``, ``n_heads``, ``hidden_dim``, ``activation``, ``sinusoidal_pos_embds``), which stay
    available as read-only aliases. Fields only one architecture has live in ``extra`` and read as
    attributes.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    position_offset: int = 0  # the first position's index (RoBERTa: pad_token_id + 1)
    id2label: dict[int, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)
    problem_type: str | None = None
    architectures: list[str] = field(default_factory=list)
    source: str = field(default="config.json", repr=False)  # the file it came from, for error messages
    # an architecture's own fields (its ``config_fields``: ``embedding_size``, ``sinusoidal_pos_embds``...),
    # read as attributes: ``config.embedding_size``
    extra: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str):
        extra = self.__dict__.get("extra") or {}
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    @property
    def max_length(self) -> int:
        """Most tokens one sequence may have: the position table's rows after ``position_offset``."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "Config":
        """Parse and validate a ``config.json`` dict.

        Raises ``ValueError``, one line starting with ``source``, for: a ``model_type`` no
        architecture registers;
        a missing key; a field of the wrong type or out of range (sizes must be positive integers,
        ``layer_norm_eps`` a positive finite number, ``id2label`` keys ``0..n-1`` naming str labels);
        an unsupported activation or position embedding type.
        """
        if not isinstance(d, dict):
            raise ValueError(f"{source} holds a JSON {type(d).__name__}, expected an object of fields")
        model_type = d.get("model_type")
        arch = architecture(model_type, source)
        # our name -> the name in this model type's config.json
        names = {k: arch.config_names.get(k, k) for k in REQUIRED}
        missing = [names[k] for k in REQUIRED if names[k] not in d]
        if missing:
            raise ValueError(f"{source}: a {model_type} config needs {missing[0]!r}, which is missing")
        fields = {k: positive_int(d[names[k]], names[k], source) for k in REQUIRED}
        fields["max_position_embeddings"] = positive_int(d.get("max_position_embeddings", 512), "max_position_embeddings", source)
        own = arch.config_fields(d, source)
        fields.update({k: v for k, v in own.items() if k in FIELDS})
        extra = {k: v for k, v in own.items() if k not in FIELDS}
        if not isinstance(fields["hidden_act"], str):
            raise ValueError(f"{source}: the activation must be a name (str), got {fields['hidden_act']!r}")
        if fields["hidden_size"] % fields["num_attention_heads"]:
            raise ValueError(
                f"{source}: {names['hidden_size']} {fields['hidden_size']} is not a multiple of "
                f"{names['num_attention_heads']} {fields['num_attention_heads']}"
            )
        pad_token_id = d.get("pad_token_id", 0)
        if pad_token_id is None:
            pad_token_id = 0
        if not _is_int(pad_token_id) or not 0 <= pad_token_id < fields["vocab_size"]:
            raise ValueError(
                f"{source}: field 'pad_token_id' must be an integer in [0, {fields['vocab_size']}), got {pad_token_id!r}"
            )
        problem_type = d.get("problem_type")
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"{source}: field 'problem_type' must be one of {PROBLEM_TYPES}, got {problem_type!r}")
        architectures = d.get("architectures") or []
        if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
            raise ValueError(f"{source}: field 'architectures' must be a list of str, got {architectures!r}")
        return cls(
            model_type=model_type,
            pad_token_id=pad_token_id,
            id2label=_id2label(d.get("id2label"), source),
            label2id=_label2id(d.get("label2id"), source),
            problem_type=problem_type,
            architectures=list(architectures),
            source=source,
            extra=extra,
            **fields,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Config":
        """Read and validate ``path/config.json`` (or a config file).

        Raises ``FileNotFoundError`` if absent and ``ValueError`` naming the file when it is empty,
        not UTF-8 JSON, not an object, or has a bad field (see :meth:`from_dict`).
        """
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no config.json in {path}: not a Hugging Face checkpoint directory")
        return cls.from_dict(read_json(file), source=str(file))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # DistilBERT's names
    dim = property(lambda self: self.hidden_size)
    n_layers = property(lambda self: self.num_hidden_layers)
    n_heads = property(lambda self: self.num_attention_heads)
    hidden_dim = property(lambda self: self.intermediate_size)
    activation = property(lambda self: self.hidden_act)

    @property
    def num_labels(self) -> int:
        return len(self.id2label) or 2


FIELDS = frozenset(f.name for f in dataclasses.fields(Config))
