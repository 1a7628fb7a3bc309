"""npformer: BERT-family transformer inference in NumPy + Numba."""

from npformer.tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = ["Tokenizer", "__version__"]
