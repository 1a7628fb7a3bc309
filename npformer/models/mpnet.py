"""MPNet (Song et al. 2020), the network of sentence-transformers' all-mpnet-base-v2: BERT's post-LN
block with a learned relative position bias added to every layer's attention scores, positions as
RoBERTa's (after the padding index 1), no token types, RoBERTa's heads. Checkpoint names are
Transformers' ``MPNetModel`` (``mpnet.``): ``encoder.layer.{i}.attention.attn.{q,k,v,o}``,
``encoder.relative_attention_bias`` ((buckets, heads)).

The bias of query ``i`` and key ``j`` is ``relative_attention_bias[bucket(j - i), head]``, T5's
bucketing (Raffel et al. 2020) as Transformers' ``MPNetEncoder.relative_position_bucket``: half the
buckets for each direction, exact distances below 8, logarithmic up to 128, the last bucket beyond.
Transformers computes it from positions ``0 .. seq - 1`` with 32 buckets whatever the config says;
so does this module.
"""

from __future__ import annotations

import math

import numpy as np

from npformer.architectures import register
from npformer.config import positive_int
from npformer.models.block import transformer_layer
from npformer.models.roberta import RobertaModel

NUM_BUCKETS, MAX_DISTANCE = 32, 128  # what Transformers' compute_position_bias passes
BIAS_CACHE = 8  # sequence lengths whose bias tables are kept


def relative_position_bucket(
    relative_position: np.ndarray, num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE
) -> np.ndarray:
    """T5 buckets of ``relative_position`` (int array, key minus query) -> int64 array of the same
    shape in ``[0, num_buckets)``; as Transformers' (float32 logarithm, truncated toward zero)."""
    n = -relative_position.astype(np.int64)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    # only read where n >= max_exact (>= 1), so log(0) never matters
    ratio = np.maximum(n, 1).astype(np.float32) / np.float32(max_exact)
    scaled = np.log(ratio) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + (scaled * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return ret + np.where(n < max_exact, n, large)


@register
class MPNetModel(RobertaModel):
    """MPNet encoder from a Transformers ``MPNetModel`` / ``MPNetFor*`` checkpoint.

    Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor.
    """

    model_type, description, prefix = "mpnet", "MPNet", "mpnet."
    token_types = False

    @staticmethod
    def layer_names(i: int) -> dict[str, str]:
        p = f"encoder.layer.{i}."
        a = p + "attention.attn."
        return {
            "q_w": a + "q.weight",
            "q_b": a + "q.bias",
            "k_w": a + "k.weight",
            "k_b": a + "k.bias",
            "v_w": a + "v.weight",
            "v_b": a + "v.bias",
            "o_w": a + "o.weight",
            "o_b": a + "o.bias",
            "ln1_g": p + "attention.LayerNorm.weight",
            "ln1_b": p + "attention.LayerNorm.bias",
            "ff1_w": p + "intermediate.dense.weight",
            "ff1_b": p + "intermediate.dense.bias",
            "ff2_w": p + "output.dense.weight",
            "ff2_b": p + "output.dense.bias",
            "ln2_g": p + "output.LayerNorm.weight",
            "ln2_b": p + "output.LayerNorm.bias",
        }

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """RoBERTa's fields with positions after index 1 (Transformers fixes MPNet's padding index
        at 1) and ``relative_attention_num_buckets`` (default 32). Raises ``ValueError`` naming
        ``source`` and the field."""
        fields = super().config_fields(d, source)
        buckets = positive_int(d.get("relative_attention_num_buckets", 32), "relative_attention_num_buckets", source)
        if buckets < NUM_BUCKETS:
            raise ValueError(
                f"{source}: relative_attention_num_buckets is {buckets}; Transformers' MPNet reads "
                f"{NUM_BUCKETS} buckets of the table"
            )
        return {**fields, "position_offset": 2, "type_vocab_size": 1, "relative_attention_num_buckets": buckets}

    def __init__(self, config, weights):
        super().__init__(config, weights)
        self.relative_attention_bias = weights.get(
            "encoder.relative_attention_bias.weight", (config.relative_attention_num_buckets, config.num_attention_heads)
        )
        self._bias: dict[int, np.ndarray] = {}

    def position_bias(self, seq: int) -> np.ndarray:
        """``(heads, seq, seq)`` float32: the bias added to layer scores of query ``i``, key ``j``."""
        bias = self._bias.get(seq)
        if bias is None:
            positions = np.arange(seq)
            buckets = relative_position_bucket(positions[None, :] - positions[:, None])
            bias = np.ascontiguousarray(self.relative_attention_bias[buckets].transpose(2, 0, 1), dtype=np.float32)
            if len(self._bias) >= BIAS_CACHE:
                self._bias.pop(next(iter(self._bias)))
            self._bias[seq] = bias
        return bias

    def layer(self, x, weights, mask, run):
        """BERT's post-LN block with :meth:`position_bias` added to the scores."""
        return transformer_layer(x, weights, mask, self.config, run, position_bias=self.position_bias(x.shape[1]))

    @property
    def num_parameters(self) -> int:
        """Number of parameters of the encoder (embeddings, layers, pooler, relative position bias)."""
        return super().num_parameters + int(self.relative_attention_bias.size)
