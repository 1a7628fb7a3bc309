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

    def layer(self, x, w, mask, run):
        ops, c = run.ops, self.config
        batch, seq, hidden = x.shape
        x = x.reshape(batch * seq, hidden)
        probs = run.probs(c.num_attention_heads)
        h = ops.layer_norm(x, w.ln1_g, w.ln1_b, c.layer_norm_eps)
        q, k, v = ops.linear(h, w.q_w, w.q_b), ops.linear(h, w.k_w, w.k_b), ops.linear(h, w.v_w, w.v_b)
        context = ops.attention(q, k, v, mask, c.num_attention_heads, probs)
        x = x + ops.linear(context, w.o_w, w.o_b)
        h = ops.layer_norm(x, w.ln2_g, w.ln2_b, c.layer_norm_eps)
        inner = ops.linear(h, w.ff1_w)
        ops.bias_activation_(inner, w.ff1_b, c.hidden_act)
        x = x + ops.linear(inner, w.ff2_w, w.ff2_b)
        for name, value in (("query", q), ("key", k), ("value", v), ("probs", probs)):
            run.keep(name, value)
        if run.tracing:
            run.record(self._output_name(run.names), x.reshape(batch, seq, -1).copy())
        return x.reshape(batch, seq, hidden), probs if run.output_attentions else None

    @staticmethod
    def _output_name(names: dict[str, str]) -> str:
        return names["ln2"].rsplit(".output", 1)[0]  # encoder.layer.{i}

    def layer_output_name(self, i: int) -> str:
        return f"encoder.layer.{i}"

    def finish(self, x, run):
        batch, seq, hidden = x.shape
        x = self.ops.layer_norm(x.reshape(batch * seq, hidden), self.final_g, self.final_b, self.config.layer_norm_eps).reshape(
            batch, seq, hidden
        )
        if run.tracing:
            run.record(FINAL, x)
        return x
