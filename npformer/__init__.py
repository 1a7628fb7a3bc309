"""npformer: BERT-family transformer inference in NumPy + Numba.

Public API: :class:`Tokenizer`, :class:`AutoModel`, :func:`pipeline`, :func:`quantize`.
"""

from npformer.config import Config
from npformer.models.auto import AutoModel
from npformer.models.heads import MaskedLM, QuestionAnswerer, SequenceClassifier, TokenClassifier
from npformer.pipelines import pipeline
from npformer.quantization import QuantizedTensor, quantize
from npformer.tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = ["AutoModel", "Config", "MaskedLM", "QuantizedTensor", "QuestionAnswerer", "SequenceClassifier",
           "TokenClassifier", "Tokenizer", "pipeline", "quantize", "__version__"]
