"""What a forward pass runs on: the kernel family asked for (``NPFORMER_ISA``, :func:`requested_isa`),
how many threads (:func:`set_num_threads`), and one thread pool at a time owning the cores while a
pass runs (:func:`one_parallel_runtime`)."""

from __future__ import annotations

import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController


ISAS = ("avx512", "avx2")  # the Numba kernel families, best first (npformer.kernels.llvm_ir)


def requested_isa(value: str | None = None) -> str:
    """``NPFORMER_ISA`` (or ``value``), trimmed and lower-cased: ``"avx512"``, ``"avx2"``, or ``""`` (unset:
    the best the CPU has). Checked whenever a model loads, on either backend; whether the CPU has it
    is checked where the kernels compile (:func:`npformer.kernels.llvm_ir.select_isa`). Raises
    ``ValueError`` naming the variable for any other value."""
    requested = (os.environ.get("NPFORMER_ISA", "") if value is None else value).strip().lower()
    if requested and requested not in ISAS:
        raise ValueError(f"NPFORMER_ISA={requested!r} is not one of {ISAS} (or unset: the best the CPU has)")
    return requested


def max_threads() -> int:
    """The threads Numba starts with: ``NUMBA_NUM_THREADS``, else the CPUs this process may run on
    (Numba's own rule, ``numba.core.config``, read here without importing Numba)."""
    value = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if value:
        return int(value)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


_THREADPOOLS = ThreadpoolController()
_ONE_PASS = threading.Lock()
_NUM_THREADS: list[int | None] = [None]  # set_num_threads; None: max_threads()


def set_num_threads(n: int) -> None:
    """Threads every forward pass uses (its GEMMs, attention, and NumPy's BLAS where products run
    there), from 1 to :func:`max_threads`. Raises ``ValueError`` outside that range."""
    limit = max_threads()
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= limit:
        raise ValueError(f"threads must be an integer from 1 to {limit} (NUMBA_NUM_THREADS), got {n!r}")
    _NUM_THREADS[0] = n


def get_num_threads() -> int:
    """The threads a forward pass uses (see :func:`set_num_threads`)."""
    return _NUM_THREADS[0] or max_threads()


@contextlib.contextmanager
def one_parallel_runtime(ops, blas_linears: bool):
    """Let one thread pool own the cores during a forward pass on the kernels ``ops``
    (:mod:`npformer.kernels.ops` or :mod:`npformer.kernels.numpy_ops`).

    One pass at a time in the process: the kernels release the GIL (``nogil``), so other Python
    threads (a server's tokenizers, its event loop) run meanwhile, but two passes from two threads
    wait for each other rather than split the cores between two thread pools.

    OpenBLAS and Numba's OpenMP workers both busy-wait after a parallel call; with both pools
    alive on few cores each steals the other's cycles (measured here: DistilBERT b=1 float32
    200 ms -> 75 ms, int8 116 ms -> 27 ms). Normally every product runs in Numba (packed float32
    or int8 GEMM, attention), so BLAS gets one thread; the limit is process-wide while the pass
    runs. Where Linear layers go through BLAS (the NumPy backend, or float32 on a CPU without
    AVX2), Numba's kernels run on the calling thread instead.
    """
    n = get_num_threads()
    with _ONE_PASS, ops.threads(1 if blas_linears else n), _THREADPOOLS.limit(limits=n if blas_linears else 1, user_api="blas"):
        yield
