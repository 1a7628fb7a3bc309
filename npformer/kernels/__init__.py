"""The math of npformer, in Numba: each kernel names the reference it reproduces and the test that
compares with it.

- :mod:`llvm_ir`: CPU features, tile sizes, packed strides and IR helpers shared by the GEMMs.
- :mod:`gemm_f32`: the packed float32 GEMM (AVX-512 FMA micro-kernel) and ``PackedMatrix``.
- :mod:`gemm_int8`: row quantization and the int8 GEMMs (AVX-512 VNNI, portable).
- :mod:`ops`: layer norm, activations, attention with its masked softmax, and ``linear``.
"""
