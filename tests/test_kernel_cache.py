"""Numba's compiled kernels are cached in $NPFORMER_CACHE/numba/<key>, never inside the package (pip
leaves such files behind on uninstall, and the leftover folder shadows the next install); the user's
own cache=True functions keep Numba's default place; an unwritable cache degrades with one warning."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import npformer

PACKAGE = Path(npformer.__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys, warnings
    warnings.simplefilter("always")
    import numpy as np
    from npformer.kernels import ops, jit
    x = np.ones((2, 8), np.float32)
    print(float(ops.layer_norm(x, np.ones(8, np.float32), np.zeros(8, np.float32), 1e-12).sum()))
    print(jit.kernel_cache_dir())
    import user_kernels
    print(user_kernels.twice(2.0))
""")


def run(tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    (tmp_path / "user_kernels.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    env = {**os.environ, "NPFORMER_CACHE": str(cache), "PYTHONPATH": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def kernel_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.suffix in (".nbi", ".nbc")]


def test_kernels_are_cached_outside_the_package_and_user_code_is_untouched(tmp_path):
    before = set(kernel_files(PACKAGE))
    first = run(tmp_path, tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.split()
    assert lines[0] == "0.0" and lines[2] == "4.0"
    key_dir = Path(lines[1])
    assert key_dir.parent == tmp_path / "cache" / "numba"
    # another clone, or an edited kernel module (one kernel inlines another's code): another key
    digest = hashlib.sha1()
    for source in sorted((PACKAGE / "kernels").glob("*.py")):
        digest.update(source.read_bytes())
    copy = hashlib.sha1(str(PACKAGE).encode("utf-8")).hexdigest()[:8]
    for part in (npformer.__version__, f"py{sys.version_info[0]}{sys.version_info[1]}", "numba-", copy, digest.hexdigest()[:10]):
        assert part in key_dir.name
    assert any(p.name.startswith("ops.layer_norm") for p in kernel_files(key_dir))
    assert set(kernel_files(PACKAGE)) == before  # nothing new written inside the package
    # the user's own cache=True function stays in Numba's default place, beside its source
    assert [p.name.split("-")[0] for p in kernel_files(tmp_path / "__pycache__")] == ["user_kernels.twice"] * 2
    assert not any("user_kernels" in p.name for p in kernel_files(tmp_path / "cache"))
    # a second process loads the same entries: the index files are not rewritten
    stamps = {p: p.stat().st_mtime_ns for p in kernel_files(key_dir)}
    second = run(tmp_path, tmp_path / "cache")
    assert second.returncode == 0 and second.stdout == first.stdout
    assert {p: p.stat().st_mtime_ns for p in kernel_files(key_dir)} == stamps


def test_an_unwritable_cache_warns_once_and_still_computes(tmp_path):
    before = set(kernel_files(PACKAGE))
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    result = run(tmp_path, blocked)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "0.0"
    assert result.stderr.count("cannot write the kernel cache") == 1, result.stderr
    assert set(kernel_files(PACKAGE)) == before  # no fallback to the package's __pycache__


def test_a_new_kernel_source_removes_this_copys_older_cache_directories(tmp_path):
    """The first process of a new version or kernel source deletes the directories the same copy of
    npformer made for older ones; another copy's, Python's, Numba's or kernel family's stay."""
    first = run(tmp_path, tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    key_dir = Path(first.stdout.split()[1])
    prefix = f"npformer-{npformer.__version__}-"
    family = key_dir.name[len(prefix) : -11]  # the name without its version and its source hash
    rest = family.split("-numba-", 1)[1]
    isa, other_isa = ("-native-", "-avx2-") if "-native-" in family else ("-avx2-", "-native-")
    older = [f"npformer-0.0.1-{family}-{'a' * 10}", f"{prefix}{family}-{'b' * 10}"]
    others = [
        f"{prefix}{family[:-8]}{'c' * 8}-{'d' * 10}",  # another copy of npformer
        f"{prefix}{family.replace(isa, other_isa)}-{'e' * 10}",  # another kernel family
        f"{prefix}py10-numba-{rest}-{'f' * 10}",  # another Python
        "unrelated",
    ]
    for name in older + others:
        (key_dir.parent / name / "npformer").mkdir(parents=True)
    second = run(tmp_path, tmp_path / "cache")  # its key exists: nothing removed
    assert second.returncode == 0 and all((key_dir.parent / name).is_dir() for name in older + others)
    shutil.rmtree(key_dir)  # as after an upgrade or an edit: this key is new
    third = run(tmp_path, tmp_path / "cache")
    assert third.returncode == 0, third.stderr
    assert sorted(p.name for p in key_dir.parent.iterdir()) == sorted([key_dir.name, *others])
