"""ELECTRA (Clark et al. 2020): BERT's block and checkpoint names under ``electra.``, with
embeddings ``embedding_size`` wide and, when that differs from ``hidden_size``, a Linear
``embeddings_project`` up to ``hidden_size`` before the first layer; no pooler. Heads as
Transformers' ``ElectraFor*``: classification ``classifier.dense`` -> GELU -> ``classifier.out_proj``
on the first token; token classification and QA as BERT's; the generator's masked LM
``generator_predictions.dense`` (hidden -> embedding size) -> GELU -> ``generator_predictions.LayerNorm``
-> ``generator_lm_head`` tied to the word embeddings. Its tokenizer is BERT's WordPiece.
"""

from __future__ import annotations

from npformer.architectures import register
from npformer.config import positive_int
from npformer.models.bert import BertModel
from npformer.weights import Weights


@register
class ElectraModel(BertModel):
    """ELECTRA encoder (discriminator or generator) from a Transformers ``ElectraModel`` /
    ``ElectraFor*`` checkpoint.

    Raises ``KeyError``/``ValueError`` naming a missing or mis-shaped tensor.
    """

    model_type, description, prefix = "electra", "ELECTRA", "electra."
    namespaces = ("embeddings.", "embeddings_project.", "encoder.")
    pooler_name = None
    pre_classifier, pre_classifier_act, classifier_name = "classifier.dense", "gelu", "classifier.out_proj"
    mlm_names = ("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head", "generator_lm_head.bias")
    mlm_act = "gelu"

    @classmethod
    def config_fields(cls, d: dict, source: str) -> dict:
        """BERT's fields and ``embedding_size`` (default 128, as Transformers' ElectraConfig).
        Raises ``ValueError`` naming ``source`` and the field."""
        return {
            **super().config_fields(d, source),
            "embedding_size": positive_int(d.get("embedding_size", 128), "embedding_size", source),
        }

    def __init__(self, config, weights: Weights):
        # Transformers builds embeddings_project only when the widths differ
        self.embedding_projection = "embeddings_project" if config.embedding_size != config.hidden_size else None
        super().__init__(config, weights)
