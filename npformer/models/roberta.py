"""RoBERTa (Liu et al. 2019): BERT's block and checkpoint names under ``roberta.``, with positions
that start after the padding index and skip padding tokens (Transformers'
``create_position_ids_from_input_ids``: ``cumsum(input_ids != pad) * (input_ids != pad) + pad``,
so a 514-row table holds 512 tokens), one token type, and its own heads: classification
``classifier.dense`` -> tanh -> ``classifier.out_proj`` on ``<s>``, masked LM ``lm_head.dense``
-> GELU -> ``lm_head.layer_norm`` -> ``lm_head.decoder`` tied to the word embeddings. Its tokenizer
is byte-level BPE (:mod:`npformer.tokenizer.bpe`).
"""

from __future__ import annotations

import numpy as np

from npformer.architectures import register
from npformer.models.bert import BertModel


@register
class RobertaModel(BertModel):
    """RoBERTa encoder from a Transformers ``RobertaModel`` / ``RobertaFor*`` checkpoint.

    Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor.
    """

    model_type, description, prefix = "roberta", "RoBERTa", "roberta."
    namespaces = ("embeddings.", "encoder.", "pooler.")
    pre_classifier, pre_classifier_act, classifier_name = "classifier.dense", "tanh", "classifier.out_proj"
    mlm_names = ("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder", "lm_head.bias")
    mlm_act = "gelu"

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """BERT's fields, and ``position_offset`` = ``pad_token_id + 1`` (default pad 1, as
        Transformers' RobertaConfig). Raises ``ValueError`` naming ``source`` and the field."""
        pad = d.get("pad_token_id", 1)
        if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
            raise ValueError(f"{source}: field 'pad_token_id' must be an integer >= 0, got {pad!r}")
        return {**super().config_fields(d, source), "position_offset": pad + 1}

    def position_ids(self, input_ids: np.ndarray) -> np.ndarray:
        """``(batch, seq)`` rows of the position table: ``pad + 1, pad + 2, ...`` over the tokens that
        are not padding, ``pad`` on padding."""
        pad = self.config.position_offset - 1
        real = input_ids != pad
        return np.cumsum(real, axis=1) * real + pad


@register
class XLMRobertaModel(RobertaModel):
    """XLM-RoBERTa (Conneau et al. 2020): RoBERTa's network and checkpoint names (``roberta.``) with a
    multilingual SentencePiece Unigram tokenizer (:mod:`npformer.tokenizer.unigram`)."""

    model_type, description = "xlm-roberta", "XLM-RoBERTa"


@register
class CamembertModel(RobertaModel):
    """CamemBERT (Martin et al. 2020): RoBERTa's network and checkpoint names (``roberta.``) trained on
    French, with a SentencePiece tokenizer."""

    model_type, description = "camembert", "CamemBERT"
