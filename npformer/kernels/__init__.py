"""The math of npformer: each kernel names the reference it reproduces and the test that compares with it.

- :mod:`numpy_ops`: the encoder's operations in plain NumPy (``backend="numpy"``), no Numba.
- :mod:`linear`: the Linear layer's weight kinds (``QuantizedTensor``) and the one switch between
  the GEMMs, for both backends (no Numba at import).
- :mod:`layout`: the VNNI packed int8 layout.
- :mod:`llvm_ir`: CPU features, tile sizes, packed strides and IR helpers shared by the GEMMs.
- :mod:`gemm_f32`: the packed float32 GEMM (AVX-512 / AVX2 FMA micro-kernel) and ``PackedMatrix``.
- :mod:`gemm_int8`: row quantization and the int8 GEMMs (AVX-512 VNNI, AVX2, portable).
- :mod:`jit`: ``njit`` with the kernel cache in ``$NPFORMER_CACHE/numba`` (never in the package).
- :mod:`ops`: the Numba backend's operations (``backend="numba"``): layer norm, fused Add & Norm, and
  the activations and attention it re-exports.
- :mod:`attention`: padded attention with its masked softmax, and the unpadded online-softmax one.
- :mod:`activations`: GELU and ReLU, alone or with the next int8 GEMM's row quantization in one pass.

The Numba modules are imported on first use (PEP 562): ``from npformer import kernels`` costs
nothing, and ``kernels.ops`` (or ``gemm_f32``...) imports Numba, about 0.3 s, when a model first needs
it. This is the package's one deferred import, so that a one-off call on the NumPy backend never
loads Numba; every other npformer import is at the top of its module.
"""

import importlib

NUMBA_MODULES = ("jit", "llvm_ir", "gemm_f32", "gemm_int8", "activations", "attention", "ops")


def __getattr__(name: str):
    if name in NUMBA_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
