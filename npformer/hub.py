"""Local directory or Hugging Face Hub id -> a local checkpoint directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("npformer")

# Models that ship inside the package, by the names every command accepts.
BUILTIN = {"builtin:sentiment": Path(__file__).resolve().parent / "builtin" / "sentiment"}

# What npformer reads: configs, vocabularies, safetensors weights and sentence-transformers modules.
ALLOW_PATTERNS = ["*.json", "vocab.txt", "*.safetensors", "1_Pooling/*", "2_Normalize/*", "README.md"]
# A repository without safetensors may hold an ONNX export (transformers.js layout); the one taken,
# in this order: float32 first, since it converts exactly, then the int8 and 4-bit copies.
ONNX_FILES = ("model.onnx", "model_quantized.onnx", "model_int8.onnx", "model_uint8.onnx", "model_q4.onnx")


def cache_dir() -> Path:
    """npformer's own cache: ``$NPFORMER_CACHE``, by default ``~/.cache/npformer`` (where
    ``scripts/fetch_minilm.py`` puts all-MiniLM-L6-v2 and the benchmarks their checkpoints)."""
    return Path(os.environ.get("NPFORMER_CACHE", Path.home() / ".cache" / "npformer"))


def hub_commit(directory: Path) -> str | None:
    """The Hub commit a directory of ``huggingface_hub``'s cache holds (``.../snapshots/<commit>``), else None."""
    directory = Path(directory)
    return directory.name if directory.parent.name == "snapshots" and len(directory.name) == 40 else None


def fetch_onnx(repo_id: str, revision: str | None) -> Path | None:
    """Download the first of :data:`ONNX_FILES` the repository has (top level or ``onnx/``) into the
    Hub cache beside its config, with its external-data file if it has one; None if it has none.
    Raises ``huggingface_hub``'s errors for anything but a missing file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for folder in ("onnx/", ""):
        for name in ONNX_FILES:
            try:
                file = Path(hf_hub_download(repo_id, folder + name, revision=revision))
            except EntryNotFoundError:
                continue
            for data in ("_data", ".data"):  # external weights beside the graph (Optimum's name, torch's)
                try:
                    hf_hub_download(repo_id, folder + name + data, revision=revision)
                except EntryNotFoundError:
                    pass
            log.info("%s has no safetensors; fetched its ONNX export %s", repo_id, folder + name)
            return file
    return None


def resolve(path_or_id: str | Path, revision: str | None = None) -> Path:
    """Return a directory holding the checkpoint ``path_or_id``.

    ``builtin:sentiment`` names the model shipped in the package (:data:`BUILTIN`).
    A path that exists is used as it is. Anything else is taken for a Hub repository id and
    fetched with ``huggingface_hub.snapshot_download`` (config, tokenizer and ``*.safetensors``
    files only; ``revision`` pins a branch, tag or commit); a repository without safetensors gets
    its ONNX export fetched too (:func:`fetch_onnx`), which loading converts. ``HF_HUB_OFFLINE=1`` is honoured:
    then only the local Hub cache is read.

    Raises:
        FileNotFoundError: the path does not exist and the id cannot be fetched (offline and not
            cached, unknown repository, no network); the message says how to pass a local path.
    """
    if str(path_or_id) in BUILTIN:
        return BUILTIN[str(path_or_id)]
    path = Path(path_or_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is a file; pass the checkpoint directory that holds config.json")
        return path
    name = str(path_or_id)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not name.strip():
        raise FileNotFoundError(f"checkpoint directory not found: {name}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        log.info("fetching %s (revision %s) with huggingface_hub", name, revision or "main")
        snapshot = Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=ALLOW_PATTERNS))
        if not any(snapshot.glob("*.safetensors")):
            fetch_onnx(name, revision)
        return snapshot
    except HFValidationError as e:
        raise FileNotFoundError(f"{name!r} is neither a local directory nor a valid Hub id: {e}") from None
    except Exception as e:  # offline and not cached, no network, unknown repository, gated model
        raise FileNotFoundError(
            f"could not get {name!r} from the Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0]}). "
            f"Without network access (or with HF_HUB_OFFLINE=1) download the checkpoint elsewhere and pass "
            f"its local directory (config.json, vocab.txt, *.safetensors) instead of the id"
        ) from None
