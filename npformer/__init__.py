"""npformer: BERT-family transformer inference in NumPy + Numba.

Public API: :class:`Tokenizer`, :class:`AutoModel`, :func:`pipeline`, :class:`CrossEncoder`,
:class:`SparseEncoder`, :class:`ColBERT`, :func:`quantize`, :func:`convert`.
(``npformer.convert`` is the function; its module is imported as ``from npformer.convert import ...``.)
"""

import logging

from npformer.colbert import ColBERT, colbert_scores
from npformer.config import Config
from npformer.convert import convert, quantize, save_quantized
from npformer.cross_encoder import CrossEncoder
from npformer.models.auto import (
    AutoModel,
    AutoTokenizer,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from npformer.runtime import get_num_threads, set_num_threads
from npformer.models.heads import MaskedLM, QuestionAnswerer, SequenceClassifier, TokenClassifier
from npformer.pipelines import pipeline
from npformer.quantization import QuantizedTensor
from npformer.search import quantize_embeddings, semantic_search, similarity
from npformer.sparse_encoder import SparseEncoder, SparseVector
from npformer.tokenizer import Tokenizer
from npformer.tracing import Trace, trace
from npformer.version import __version__

__all__ = [
    "AutoTokenizer",
    "ColBERT",
    "colbert_scores",
    "CrossEncoder",
    "SparseEncoder",
    "SparseVector",
    "trace",
    "Trace",
    "AutoModel",
    "AutoModelForMaskedLM",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "Config",
    "convert",
    "MaskedLM",
    "QuantizedTensor",
    "QuestionAnswerer",
    "SequenceClassifier",
    "TokenClassifier",
    "Tokenizer",
    "pipeline",
    "quantize",
    "quantize_embeddings",
    "save_quantized",
    "semantic_search",
    "similarity",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]

logging.getLogger("npformer").addHandler(logging.NullHandler())  # the application decides what is shown
