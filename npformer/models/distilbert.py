"""DistilBERT (Sanh et al. 2019): BERT's block without token types or pooler, under the names of
Transformers' ``DistilBertModel``: ``embeddings.{word,position}_embeddings``, ``embeddings.LayerNorm``,
``transformer.layer.{i}.attention.{q,k,v,out}_lin``, ``sa_layer_norm``, ``ffn.lin1``, ``ffn.lin2``,
``output_layer_norm``. Sinusoidal position embeddings are stored in the checkpoint like learned
ones, so both load the same way. The computation is :mod:`npformer.models.encoder`'s.
"""

from __future__ import annotations

from npformer.architectures import register
from npformer.config import boolean
from npformer.models.encoder import Encoder


def distilbert_layer_names(i: int) -> dict[str, str]:
    """Field of :class:`~npformer.models.encoder.LayerWeights` -> checkpoint key, for layer ``i``."""
    p = f"transformer.layer.{i}."
    return {
        "q_w": p + "attention.q_lin.weight",
        "q_b": p + "attention.q_lin.bias",
        "k_w": p + "attention.k_lin.weight",
        "k_b": p + "attention.k_lin.bias",
        "v_w": p + "attention.v_lin.weight",
        "v_b": p + "attention.v_lin.bias",
        "o_w": p + "attention.out_lin.weight",
        "o_b": p + "attention.out_lin.bias",
        "ln1_g": p + "sa_layer_norm.weight",
        "ln1_b": p + "sa_layer_norm.bias",
        "ff1_w": p + "ffn.lin1.weight",
        "ff1_b": p + "ffn.lin1.bias",
        "ff2_w": p + "ffn.lin2.weight",
        "ff2_b": p + "ffn.lin2.bias",
        "ln2_g": p + "output_layer_norm.weight",
        "ln2_b": p + "output_layer_norm.bias",
    }


@register
class DistilBertModel(Encoder):
    """DistilBERT encoder from a Transformers ``DistilBertModel`` checkpoint (no pooler).

    ``token_type_ids`` are accepted and ignored, as in Transformers.
    """

    model_type, description, prefix = "distilbert", "DistilBERT", "distilbert."
    config_names = {
        "hidden_size": "dim",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "intermediate_size": "hidden_dim",
    }
    pre_classifier = "pre_classifier"
    mlm_names = ("vocab_transform", "vocab_layer_norm", "vocab_projector", "vocab_projector.bias")
    namespaces = ("embeddings.", "transformer.")
    token_types = False
    layer_names = staticmethod(distilbert_layer_names)

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """DistilBERT's ``activation`` and ``sinusoidal_pos_embds``; no token types; epsilon 1e-12."""
        return {
            "hidden_act": d.get("activation", "gelu"),
            "layer_norm_eps": 1e-12,
            "type_vocab_size": 0,
            "sinusoidal_pos_embds": boolean(d.get("sinusoidal_pos_embds", False), "sinusoidal_pos_embds", source),
        }
