"""DistilBERT encoder (Sanh et al. 2019): BERT's block without token types or pooler.

Key tree as Transformers' ``DistilBertModel``: ``embeddings.{word,position}_embeddings``,
``embeddings.LayerNorm``, ``transformer.layer.{i}.attention.{q,k,v,out}_lin``,
``sa_layer_norm``, ``ffn.lin1``, ``ffn.lin2``, ``output_layer_norm``. Sinusoidal position
embeddings are stored in the checkpoint like learned ones, so both load the same way.

    E = LayerNorm(W_word[input_ids] + W_pos[0..S))
    then the BERT block of :func:`npformer.models.bert.transformer_layer`, n_layers times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npformer import kernels
from npformer.config import Config
from npformer.models.bert import Encoder, LayerWeights, lookup
from npformer.weights import Weights


def distilbert_layer_names(i: int) -> dict[str, str]:
    p = f"transformer.layer.{i}."
    return {"q_w": p + "attention.q_lin.weight", "q_b": p + "attention.q_lin.bias",
            "k_w": p + "attention.k_lin.weight", "k_b": p + "attention.k_lin.bias",
            "v_w": p + "attention.v_lin.weight", "v_b": p + "attention.v_lin.bias",
            "o_w": p + "attention.out_lin.weight", "o_b": p + "attention.out_lin.bias",
            "ln1_g": p + "sa_layer_norm.weight", "ln1_b": p + "sa_layer_norm.bias",
            "ff1_w": p + "ffn.lin1.weight", "ff1_b": p + "ffn.lin1.bias",
            "ff2_w": p + "ffn.lin2.weight", "ff2_b": p + "ffn.lin2.bias",
            "ln2_g": p + "output_layer_norm.weight", "ln2_b": p + "output_layer_norm.bias"}


@dataclass
class DistilBertEmbeddings:
    word: np.ndarray  # (vocab_size, dim) float32, or an int8 QuantizedTensor
    position: np.ndarray  # (max_position_embeddings, dim)
    ln_g: np.ndarray
    ln_b: np.ndarray


class DistilBertModel(Encoder):
    """DistilBERT encoder from a Transformers ``DistilBertModel`` checkpoint (no pooler).

    ``token_type_ids`` are accepted and ignored, as in Transformers.
    """

    namespaces = ("embeddings.", "transformer.")
    layer_names = staticmethod(distilbert_layer_names)

    def __init__(self, config: Config, weights: Weights):
        self.config = c = config
        h = c.hidden_size
        self.embeddings = DistilBertEmbeddings(
            word=weights.get("embeddings.word_embeddings.weight", (c.vocab_size, h)),
            position=weights.get("embeddings.position_embeddings.weight", (c.max_position_embeddings, h)),
            ln_g=weights.get("embeddings.LayerNorm.weight", (h,)),
            ln_b=weights.get("embeddings.LayerNorm.bias", (h,)))
        self.layers = [LayerWeights.load(weights, self.layer_names(i), c) for i in range(c.num_hidden_layers)]

    def embed(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """``(batch, seq)`` ids -> ``(batch, seq, dim)`` float32 embeddings after layer norm."""
        e = self.embeddings
        batch, seq = input_ids.shape
        x = lookup(e.word, input_ids) + e.position[:seq]  # [B, S, H]
        return kernels.layer_norm(x.reshape(batch * seq, -1), e.ln_g, e.ln_b,
                                  self.config.layer_norm_eps).reshape(batch, seq, -1)
