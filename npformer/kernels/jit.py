"""``njit`` for npformer's kernels, with Numba's on-disk cache in npformer's own cache directory.

Numba's default (``cache=True``) writes ``*.nbi`` / ``*.nbc`` files into ``__pycache__`` beside the
source, which for an installed npformer is ``site-packages``: pip does not remove them on uninstall,
and the leftover ``npformer/`` folder then shadows a later (editable) install as an empty namespace
package. Here every npformer kernel is cached under ``$NPFORMER_CACHE/numba/<key>/`` instead, where
``<key>`` names the npformer version, Python, Numba, the kernel family (``NPFORMER_ISA`` and the
CPU) and the copy of npformer (its directory), so that none of them ever loads another's entry.
Numba's own index also checks the source file's hash and the CPU's name and features. The first
process of a new npformer version or kernel source removes the directories the same copy of npformer
left for its older ones (same Python, Numba, kernel family and CPU), which it can never load again.

The locator claims only files inside the ``npformer`` package: the user's own ``cache=True`` functions
keep Numba's default locations, and no process-wide setting (``NUMBA_CACHE_DIR``) is touched. If the
directory cannot be created or written, the kernels are compiled without caching, with one warning.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import llvmlite.binding as llvm_binding
import numba
from numba.core import caching

from npformer.hub import cache_dir
from npformer.runtime import requested_isa
from npformer.version import __version__

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def cache_key() -> str:
    """The sub-directory name of this process's kernel cache: npformer, Python and Numba versions,
    the requested kernel family (``NPFORMER_ISA``, ``native`` when unset), the host CPU's name, a
    hash of which copy of npformer this is, and a hash of its kernels' source. The copy: two checkouts
    on one machine would otherwise share entries and recompile over each other. The source: Numba
    checks only the file that defines a cached function, so a kernel that inlines another module's
    (attention inlines the GEMM's tile loop) would otherwise keep the old code after an edit there."""
    return f"npformer-{__version__}-{_family()}-{_source_hash()}"


@functools.cache
def _source_hash() -> str:
    """A hash of the kernel modules' source, read once per process (every cached kernel asks for its key)."""
    source = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        source.update(path.read_bytes())
    return source.hexdigest()[:10]


def _family() -> str:
    """What a cache directory shares with those this copy of npformer made for its older versions
    and kernel sources: Python and Numba versions, kernel family, CPU and the copy's directory."""
    isa = requested_isa() or "native"
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    copy = hashlib.sha1(str(PACKAGE_DIR).encode("utf-8")).hexdigest()[:8]
    return f"{python}-numba-{numba.__version__}-{isa}-{llvm_binding.get_host_cpu_name()}-{copy}"


def _remove_older(directory: Path) -> None:
    """Delete the sibling cache directories of ``directory`` that this copy of npformer made for
    another version or kernel source (:func:`_family`); others' (another checkout, Python, Numba,
    ``NPFORMER_ISA`` or CPU) stay. A process still running the old code compiles again if it needs
    a kernel it had not loaded yet."""
    stale = re.compile(rf"npformer-[^/]+-{re.escape(_family())}-[0-9a-f]{{10}}")
    for sibling in directory.parent.iterdir():
        if sibling != directory and sibling.is_dir() and stale.fullmatch(sibling.name):
            shutil.rmtree(sibling, ignore_errors=True)


def kernel_cache_dir() -> Path:
    """Where npformer's compiled kernels are cached: ``$NPFORMER_CACHE/numba/<cache_key()>``."""
    return cache_dir() / "numba" / cache_key()


class NpformerCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for the files of the ``npformer`` package (None for any other file, so
    Numba's own locators handle those as before)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        relative = Path(py_file).resolve().relative_to(PACKAGE_DIR).parent
        self._cache_path = str(kernel_cache_dir().joinpath(*relative.parts))

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        if not Path(py_file).resolve().is_relative_to(PACKAGE_DIR):
            return None
        self = cls(py_func, py_file)
        self.ensure_cache_path()  # checked once in _usable() below; an error here is real
        return self


def _usable(directory: Path) -> bool:
    try:
        new = not directory.is_dir()
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
        if new:
            _remove_older(directory)
        return True
    except OSError as error:
        warnings.warn(
            f"npformer: cannot write the kernel cache {directory} ({error.strerror or error}); "
            "kernels are compiled in every process (set NPFORMER_CACHE to a writable directory)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False


CACHING = _usable(kernel_cache_dir())
# Numba's list of locators, tried in order for each cached function (``_CacheImpl`` before Numba 0.61)
_LOCATORS = getattr(caching, "CacheImpl", None) or caching._CacheImpl
if CACHING and NpformerCacheLocator not in _LOCATORS._locator_classes:
    _LOCATORS._locator_classes.insert(0, NpformerCacheLocator)


# Fast-math without ``reassoc`` or ``arcp``: no NaN or infinity, no signed zeros, fused multiply-adds
# allowed, but every sum is added in the order the source writes and every division is a division.
# With reassociation LLVM may vectorize a reduction one way when Numba compiles a kernel in the
# running process and another in the object code it caches (seen on a prange loop that both
# exponentiates and sums: the softmax), so a process that compiled the kernels and one that loaded
# them computed different bits. With ``arcp`` the vectorized loop divides by a reciprocal estimate
# and the scalar loop LLVM keeps beside it (taken for strided arrays, or when a runtime check finds
# the output within a few vectors of an input) by a true division: GELU's bits depended on
# where its arrays lay in memory. Kernels that need a fast sum write its lanes out
# (``ops._lane_moment``, ``attention._sum8``).
FASTMATH = {"nnan", "ninf", "nsz", "contract", "afn"}  # a set: Numba takes no other collection


def njit(*args, **options):
    """``numba.njit`` with npformer's cache (see the module docstring); ``cache`` is decided here."""
    return numba.njit(*args, cache=CACHING, **options)
