"""The kernel families (``NPFORMER_ISA``): the choice itself, and the kernel tests on the AVX2 path.

The AVX2 path (ymm FMA float32 micro-kernel, int8 by vpmaddwd) is what CPUs without AVX-512 run;
``NPFORMER_ISA=avx2`` forces it here, with Numba compiling for Haswell, so that CI runs the kernel,
quantization and encoder-parity tests on both paths (this process runs them on the default one).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from npformer.kernels.llvm_ir import CPU_FEATURES, select_isa

AVX512 = frozenset({"+avx512f", "+avx2", "+fma"})
AVX2 = frozenset({"+avx2", "+fma", "-avx512f"})


def test_select_isa():
    assert select_isa("", AVX512) == "avx512" and select_isa("", AVX2) == "avx2"
    assert select_isa("", frozenset({"+neon"})) == "portable"
    assert select_isa(" AVX2 ", AVX512) == "avx2"
    with pytest.raises(ValueError, match=r"NPFORMER_ISA='sse9' is not one of \('avx512', 'avx2'\)"):
        select_isa("sse9", AVX512)
    with pytest.raises(ValueError, match="NPFORMER_ISA='avx512': this CPU has no AVX512"):
        select_isa("avx512", AVX2)


@pytest.mark.parametrize("one_off", [True, False])
def test_bad_isa_is_one_line_from_the_command_line(tmp_path, one_off):
    """On either backend (a one-off call on the NumPy one never compiles a kernel): exit 2, one line."""
    source = tmp_path / "texts.txt"
    source.write_text("a fine film\n", encoding="utf-8")
    texts = ["a fine film"] if one_off else ["--input", str(source)]
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "sentiment", *texts],
        capture_output=True,
        text=True,
        env={**os.environ, "NPFORMER_ISA": "sse9"},
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "npformer: error: NPFORMER_ISA='sse9' is not one of ('avx512', 'avx2') (or unset: the best the CPU has)"
    ]


@pytest.mark.skipif(
    "+avx2" not in CPU_FEATURES or "+avx512f" not in CPU_FEATURES,
    reason="forcing the AVX2 path needs an AVX-512 CPU (an AVX2 CPU runs it by default)",
)
def test_kernel_tests_pass_on_the_avx2_path():
    env = {**os.environ, "NPFORMER_ISA": "avx2"}
    files = [
        "tests/test_gemm.py",
        "tests/test_kernels.py",
        "tests/test_quantization.py",
        "tests/test_encoder.py",
        "tests/test_batcher.py",
        "tests/test_numpy_backend.py::test_int8_linear_is_the_int8_gemm",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *files, "-k", "not minilm"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "from npformer.kernels.llvm_ir import ISA, F32_LANES, HAS_VNNI; print(ISA, F32_LANES, HAS_VNNI)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.stdout.split() == ["avx2", "8", "False"]
