"""The package's layout stays walkable: no import cycles, no npformer import hidden inside a function,
every module importable on its own, `import npformer` light, ruff's lint and format clean. Function size
is ruff's to keep (complexity, branches, statements and arguments, pyproject.toml); a module line cap
remains as a backstop against a module that holds several concepts.

One import is deferred on purpose, and only there: ``npformer.kernels`` imports its Numba modules on
first use (PEP 562 ``__getattr__``), so that a one-off call on the NumPy backend never loads Numba."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from npformer.kernels import numpy_ops, ops
from npformer.kernels.protocol import OPS_FUNCTIONS, Ops

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "npformer"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500  # formatted lines (ruff format)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], list[str]]:
    """(npformer modules imported at module level, those imported inside a function or class body)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, nested = set(), []
    known = {module_name(p) for p in MODULES}

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:  # relative import
            package = module_name(path).split(".")
            package = package[: len(package) - node.level + (1 if path.name == "__init__.py" else 0)]
            base = ".".join(package + ([base] if base else []))
        # "from npformer.kernels import ops" imports the module npformer.kernels.ops
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [n for n in targets(node) if n.split(".")[0] == "npformer"]
            (top.update if node.col_offset == 0 else nested.extend)(names)
    return top, nested


GRAPH = {module_name(p): imports(p)[0] for p in MODULES}


def test_no_npformer_import_inside_functions():
    hidden = {module_name(p): imports(p)[1] for p in MODULES if imports(p)[1]}
    assert hidden == {}, f"imports inside functions (a circle being dodged?): {hidden}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (module -> modules it imports) as a path, or None (depth-first search)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "active"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "active":
                return stack[stack.index(n) :] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    """Over module-level imports between npformer's modules."""
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_module_size(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{module_name(path)} has {n} lines: split it by concept"


def test_every_module_imports_on_its_own():
    """Each module, first in a fresh interpreter: an order-dependent import or a circle fails here."""
    code = (
        "import importlib, sys\n"
        f"for name in {sorted(GRAPH)!r}:\n"
        "    for k in [k for k in sys.modules if k.startswith('npformer')]: del sys.modules[k]\n"
        "    importlib.import_module(name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_import_npformer_imports_nothing_optional():
    code = (
        "import sys, npformer\n"
        "heavy = ['torch', 'transformers', 'tokenizers', 'onnx', 'onnxruntime', 'fastapi', 'starlette', 'uvicorn', "
        "'prometheus_client', 'dask',\n"
        "         'pyarrow', 'sklearn', 'pandas']\n"  # (numba itself imports scipy when it is installed)
        "print([m for m in heavy if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_import_npformer_defers_numba():
    """Numba (about 0.3 s to import, 0.4 s more to load the kernels) comes with the first model on the
    Numba backend, through ``npformer.kernels``' deferred submodules, never with ``import npformer``."""
    code = "import sys, npformer; print('numba' in sys.modules, 'llvmlite' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_ruff_check():
    """ruff's rules of pyproject.toml (pyflakes, pycodestyle, complexity and argument-count limits)
    over the package, tests, scripts and benchmarks."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "npformer", "tests", "scripts", "benchmarks", "docs/hooks.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_ruff_format():
    """The package, tests, scripts and benchmarks are as ``ruff format`` writes them."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--check",
            "--no-cache",
            "npformer",
            "tests",
            "scripts",
            "benchmarks",
            "docs/hooks.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_both_backends_implement_the_ops_protocol():
    """Every function of :class:`npformer.kernels.protocol.Ops`, with its parameters, in both
    backends' kernel modules (a Numba kernel's parameters are its Python function's)."""
    assert {"linear", "attention", "varlen_attention", "layer_norm", "threads"} <= set(OPS_FUNCTIONS)
    for module in (ops, numpy_ops):
        for name in OPS_FUNCTIONS:
            function = getattr(module, name, None)
            assert function is not None, f"{module.__name__} has no {name}"
            expected = list(inspect.signature(getattr(Ops, name)).parameters)[1:]  # without self
            got = list(inspect.signature(getattr(function, "py_func", function)).parameters)
            assert got == expected, f"{module.__name__}.{name}{got} is not the protocol's {expected}"
