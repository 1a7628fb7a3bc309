"""ALBERT (Lan et al. 2020): BERT's post-LN block with its weights shared across layers, and
factorized embeddings (``embedding_size`` wide, projected to ``hidden_size`` by
``encoder.embedding_hidden_mapping_in``). The checkpoint holds ``num_hidden_groups`` groups of
``inner_group_num`` blocks (``encoder.albert_layer_groups.{g}.albert_layers.{j}``); layer ``l``
of ``num_hidden_layers`` runs every block of group ``int(l / (num_hidden_layers /
num_hidden_groups))``, as Transformers' ``AlbertTransformer``. Heads: BERT's (the classifier on the
pooled ``<CLS>``, token classification, QA) and a masked LM ``predictions.dense`` -> activation ->
``predictions.LayerNorm`` -> ``predictions.decoder`` tied to the word embeddings. Its tokenizer is
SentencePiece Unigram (:mod:`npformer.tokenizer.unigram`).
"""

from __future__ import annotations

from npformer.architectures import register
from npformer.config import positive_int
from npformer.models.bert import BertModel


@register
class AlbertModel(BertModel):
    """ALBERT encoder from a Transformers ``AlbertModel`` / ``AlbertFor*`` checkpoint.

    Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor, and ``ValueError``
    for group counts that do not divide the layers as Transformers requires.
    """

    model_type, description, prefix = "albert", "ALBERT", "albert."
    pooler_name, pooler_activation = "pooler", "pooler_activation"
    embedding_projection = "encoder.embedding_hidden_mapping_in"
    mlm_names = ("predictions.dense", "predictions.LayerNorm", "predictions.decoder", "predictions.bias")

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """BERT's fields (activation default ``gelu_new``, ALBERT's), ``embedding_size`` (default
        128), ``num_hidden_groups`` and ``inner_group_num`` (default 1). Raises ``ValueError``
        naming ``source`` and the field."""
        fields = super().config_fields({"hidden_act": "gelu_new", **d}, source)
        layers = positive_int(d.get("num_hidden_layers", 12), "num_hidden_layers", source)
        groups = positive_int(d.get("num_hidden_groups", 1), "num_hidden_groups", source)
        if layers % groups:
            raise ValueError(f"{source}: num_hidden_groups {groups} does not divide num_hidden_layers {layers}")
        return {
            **fields,
            "embedding_size": positive_int(d.get("embedding_size", 128), "embedding_size", source),
            "num_hidden_groups": groups,
            "inner_group_num": positive_int(d.get("inner_group_num", 1), "inner_group_num", source),
        }

    def layer_names(self, i: int) -> dict[str, str]:
        """Field -> checkpoint key of block ``i``: block ``i % inner_group_num`` of group
        ``i // inner_group_num``."""
        inner = self.config.inner_group_num
        p = f"encoder.albert_layer_groups.{i // inner}.albert_layers.{i % inner}."
        a = p + "attention."
        return {
            "q_w": a + "query.weight",
            "q_b": a + "query.bias",
            "k_w": a + "key.weight",
            "k_b": a + "key.bias",
            "v_w": a + "value.weight",
            "v_b": a + "value.bias",
            "o_w": a + "dense.weight",
            "o_b": a + "dense.bias",
            "ln1_g": a + "LayerNorm.weight",
            "ln1_b": a + "LayerNorm.bias",
            "ff1_w": p + "ffn.weight",
            "ff1_b": p + "ffn.bias",
            "ff2_w": p + "ffn_output.weight",
            "ff2_b": p + "ffn_output.bias",
            "ln2_g": p + "full_layer_layer_norm.weight",
            "ln2_b": p + "full_layer_layer_norm.bias",
        }

    @property
    def num_blocks(self) -> int:
        """``num_hidden_groups * inner_group_num`` blocks of weights."""
        return self.config.num_hidden_groups * self.config.inner_group_num

    def schedule(self) -> list[tuple[int, int, bool]]:
        """Each layer runs its group's blocks in order; a layer ends with its group's last block."""
        c = self.config
        inner, runs, out = c.inner_group_num, [0] * self.num_blocks, []
        for layer in range(c.num_hidden_layers):
            group = int(layer / (c.num_hidden_layers / c.num_hidden_groups))
            for j in range(inner):
                i = group * inner + j
                out.append((i, runs[i], j == inner - 1))
                runs[i] += 1
        return out
