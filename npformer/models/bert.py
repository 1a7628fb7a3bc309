"""BERT (Devlin et al. 2019), which also runs TinyBERT and MiniLM checkpoints: the checkpoint names
of Transformers' ``BertModel`` (``embeddings.*``, ``encoder.layer.{i}.*``, ``pooler.dense.*``) on
the shared encoder of :mod:`npformer.models.encoder`, with token type embeddings and a pooler."""

from __future__ import annotations

from npformer.architectures import register
from npformer.config import epsilon, positive_int
from npformer.models.encoder import Encoder


def bert_layer_names(i: int) -> dict[str, str]:
    """Field of :class:`~npformer.models.encoder.LayerWeights` -> checkpoint key, for layer ``i``."""
    p = f"encoder.layer.{i}."
    return {
        "q_w": p + "attention.self.query.weight",
        "q_b": p + "attention.self.query.bias",
        "k_w": p + "attention.self.key.weight",
        "k_b": p + "attention.self.key.bias",
        "v_w": p + "attention.self.value.weight",
        "v_b": p + "attention.self.value.bias",
        "o_w": p + "attention.output.dense.weight",
        "o_b": p + "attention.output.dense.bias",
        "ln1_g": p + "attention.output.LayerNorm.weight",
        "ln1_b": p + "attention.output.LayerNorm.bias",
        "ff1_w": p + "intermediate.dense.weight",
        "ff1_b": p + "intermediate.dense.bias",
        "ff2_w": p + "output.dense.weight",
        "ff2_b": p + "output.dense.bias",
        "ln2_g": p + "output.LayerNorm.weight",
        "ln2_b": p + "output.LayerNorm.bias",
    }


@register
class BertModel(Encoder):
    """BERT / TinyBERT / MiniLM encoder from a Transformers ``BertModel`` checkpoint.

    Build with :func:`npformer.AutoModel.from_pretrained` or ``BertModel(config, weights)``.
    Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor.
    """

    model_type, description, prefix = "bert", "BERT, TinyBERT, MiniLM", "bert."
    namespaces = ("embeddings.", "encoder.", "pooler.")
    pooler_name = "pooler.dense"
    layer_names = staticmethod(bert_layer_names)

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """BERT's own config fields from the ``config.json`` dict ``d``: ``hidden_act``,
        ``layer_norm_eps``, ``type_vocab_size``, absolute positions only. Raises ``ValueError``
        naming ``source`` and the field."""
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"{source}: position_embedding_type {d['position_embedding_type']!r} is not supported (only 'absolute')"
            )
        return {
            "hidden_act": d.get("hidden_act", "gelu"),
            "layer_norm_eps": epsilon(d.get("layer_norm_eps", 1e-12), source),
            "type_vocab_size": positive_int(d.get("type_vocab_size", 2), "type_vocab_size", source),
        }
