"""``config.json`` -> a small config object with Hugging Face's names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED_MODEL_TYPES = ("bert", "distilbert")
GELU_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@dataclass
class Config:
    """Encoder hyper-parameters under the names of Hugging Face's ``BertConfig``.

    ``model_type`` ``"bert"`` covers BERT, TinyBERT and MiniLM; ``"distilbert"`` is read from
    DistilBERT's own names (``dim``, ``n_layers``, ``n_heads``, ``hidden_dim``, ``activation``,
    ``sinusoidal_pos_embds``), which stay available as read-only aliases.
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
    sinusoidal_pos_embds: bool = False
    id2label: dict[int, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)
    problem_type: str | None = None
    architectures: list[str] = field(default_factory=list)
    torch_dtype: str | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Parse a ``config.json`` dict. Raises ``ValueError`` for an unknown ``model_type``,
        a missing key, or an unsupported activation / position embedding type."""
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unknown model_type {model_type!r}: npformer supports {SUPPORTED_MODEL_TYPES} "
                             f"(BERT, TinyBERT, MiniLM, DistilBERT)")
        try:
            if model_type == "distilbert":
                common = dict(hidden_size=d["dim"], num_hidden_layers=d["n_layers"],
                              num_attention_heads=d["n_heads"], intermediate_size=d["hidden_dim"],
                              hidden_act=d.get("activation", "gelu"), layer_norm_eps=1e-12,
                              type_vocab_size=0, sinusoidal_pos_embds=bool(d.get("sinusoidal_pos_embds", False)))
            else:
                common = dict(hidden_size=d["hidden_size"], num_hidden_layers=d["num_hidden_layers"],
                              num_attention_heads=d["num_attention_heads"],
                              intermediate_size=d["intermediate_size"], hidden_act=d.get("hidden_act", "gelu"),
                              layer_norm_eps=d.get("layer_norm_eps", 1e-12),
                              type_vocab_size=d.get("type_vocab_size", 2))
                if d.get("position_embedding_type", "absolute") != "absolute":
                    raise ValueError(f"position_embedding_type {d['position_embedding_type']!r} is not supported "
                                     "(only 'absolute')")
            vocab_size = d["vocab_size"]
        except KeyError as e:
            raise ValueError(f"config.json of a {model_type} model lacks {e.args[0]!r}") from None
        if common["hidden_act"] not in GELU_ACTIVATIONS + ("relu",):
            raise ValueError(f"activation {common['hidden_act']!r} is not supported; use one of "
                             f"{GELU_ACTIVATIONS + ('relu',)}")
        if common["hidden_size"] % common["num_attention_heads"]:
            raise ValueError(f"hidden_size {common['hidden_size']} is not a multiple of num_attention_heads "
                             f"{common['num_attention_heads']}")
        id2label = {int(k): v for k, v in (d.get("id2label") or {}).items()}
        label2id = {k: int(v) for k, v in (d.get("label2id") or {}).items()}
        return cls(model_type=model_type, vocab_size=vocab_size,
                   max_position_embeddings=d.get("max_position_embeddings", 512),
                   pad_token_id=d.get("pad_token_id", 0) or 0, id2label=id2label, label2id=label2id,
                   problem_type=d.get("problem_type"), architectures=list(d.get("architectures") or []),
                   torch_dtype=d.get("torch_dtype") or d.get("dtype"), raw=dict(d), **common)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Config":
        """Read ``path/config.json`` (or a config file). Raises ``FileNotFoundError`` if absent."""
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no config.json in {path}: not a Hugging Face checkpoint directory")
        return cls.from_dict(json.loads(file.read_text(encoding="utf-8")))

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
