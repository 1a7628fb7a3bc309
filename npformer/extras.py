"""Optional extras: one clear error when a part of npformer needs a package the core install lacks."""

from __future__ import annotations

import importlib.util

EXTRAS = {
    "server": "starlette, uvicorn and prometheus_client",
    "distributed": "dask[distributed] and pyarrow",
    "onnx": "onnx",
    "train": "scikit-learn",
    "sentencepiece": "protobuf",
}


def require_extra(extra: str, *modules: str) -> None:
    """Raise ``ImportError`` (one line, naming the ``pip install`` to run: from the
    repository, until npformer is on a package index) unless every module of
    ``modules`` can be imported; the modules themselves are not imported here."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"this needs {', '.join(missing)} from the {extra!r} extra ({EXTRAS[extra]}): "
            f'pip install ".[{extra}]" in npformer\'s repository'
        )
