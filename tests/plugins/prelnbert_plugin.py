"""A pre-LN variant of BERT, registered from outside npformer: the proof that an architecture is
one module (issue "Open the joints"). Installed for the tests as the entry point
``prelnbert = prelnbert_plugin`` of the group ``npformer.architectures`` (see
``tests/test_external_architecture.py``), so every process finds it: the CLI, ``serve``.

The block normalizes before each sub-block and a final LayerNorm follows the last layer (Xiong et
al. 2020, "On Layer Normalization in the Transformer Architecture"):

    x = x + Attention(LN_1(x));  x = x + FFN(LN_2(x));  ...;  last_hidden_state = LN_f(x)

The checkpoint is BERT's (``bert.`` prefix, the same tensor names; ``attention.output.LayerNorm``
is LN_1 and ``output.LayerNorm`` LN_2) plus ``encoder.final_layer_norm``.
"""

from __future__ import annotations

import numpy as np

from npformer.architectures import register
from npformer.models.bert import BertModel

FINAL = "encoder.final_layer_norm"


@register
class PreLNBertModel(BertModel):
    """Pre-LN BERT: BERT's tensors and heads, another block, a final norm."""

    model_type, description, prefix = "prelnbert", "pre-LN BERT (a test plugin)", "bert."

    def __init__(self, config, weights):
        super().__init__(config, weights)
        h = config.hidden_size
        self.final_g = weights.get(f"{FINAL}.weight", (h,))
        self.final_b = weights.get(f"{FINAL}.bias", (h,))

    def layer(self, x, w, mask, output_attentions, scratch, record, names):
        ops, c = self.ops, self.config
        batch, seq, hidden = x.shape
        x = x.reshape(batch * seq, hidden)
        probs = np.empty((batch, c.num_attention_heads, seq, seq) if output_attentions or record else (0, 0, 0, 0), np.float32)
        h = ops.layer_norm(x, w.ln1_g, w.ln1_b, c.layer_norm_eps)
        q, k, v = ops.linear(h, w.q_w, w.q_b), ops.linear(h, w.k_w, w.k_b), ops.linear(h, w.v_w, w.v_b)
        context = ops.attention(q, k, v, mask, c.num_attention_heads, probs)
        x = x + ops.linear(context, w.o_w, w.o_b)
        h = ops.layer_norm(x, w.ln2_g, w.ln2_b, c.layer_norm_eps)
        inner = ops.linear(h, w.ff1_w)
        ops.bias_activation_(inner, w.ff1_b, c.hidden_act)
        x = x + ops.linear(inner, w.ff2_w, w.ff2_b)
        if record:
            for name, value in (("query", q), ("key", k), ("value", v)):
                record(names[name], value.reshape(batch, seq, -1))
            record(names["probs"], probs)
            record(self._output_name(names), x.reshape(batch, seq, -1).copy())
        return x.reshape(batch, seq, hidden), probs if output_attentions else None

    @staticmethod
    def _output_name(names: dict[str, str]) -> str:
        return names["ln2"].rsplit(".output", 1)[0]  # encoder.layer.{i}

    def layer_output_name(self, i: int) -> str:
        return f"encoder.layer.{i}"

    def finish(self, x, record):
        batch, seq, hidden = x.shape
        x = self.ops.layer_norm(x.reshape(batch * seq, hidden), self.final_g, self.final_b, self.config.layer_norm_eps).reshape(
            batch, seq, hidden
        )
        if record:
            record(FINAL, x)
        return x
