"""A checkpoint's files: reading its text files (JSON configs, ``vocab.txt``) with one-line errors
that name the file, line and problem instead of a decoder's traceback, and writing a converted
checkpoint (safetensors weights + the source's config and tokenizer files)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

# The files that travel with converted weights: config, tokenizer and sentence-transformers files.
BESIDE_WEIGHTS = (
    "config.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "README.md",
)


def read_json(file: Path):
    """The JSON value in ``file``. Raises ``ValueError`` naming the file when it is empty, not
    UTF-8, not JSON (with the line and column of the problem) or nested too deeply for Python's
    parser (about a thousand levels)."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not text.strip():
        raise ValueError(f"{file} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ValueError(f"{file} nests its JSON too deeply to read") from None


def read_vocab(file: Path) -> list[str]:
    """Tokens of a ``vocab.txt``, one per line. Raises ``ValueError`` naming the file and line when
    it is not UTF-8 text (a binary file, say)."""
    tokens = []
    with open(file, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                tokens.append(raw.decode("utf-8").rstrip("\n"))
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{file} line {n} is not UTF-8 text (byte {e.start}: 0x{raw[e.start]:02x}); "
                    f"a vocab.txt holds one token per line"
                ) from None
    return tokens


def write_checkpoint(tensors: dict[str, np.ndarray], metadata: dict[str, str], source: Path, out_dir: Path) -> Path:
    """Write ``tensors`` as ``out_dir/model.safetensors`` (through a temporary name, renamed once
    complete) with ``metadata``, and copy the :data:`BESIDE_WEIGHTS` files and sentence-transformers
    module folders (subdirectories holding a config.json) of ``source`` beside it. Returns ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in BESIDE_WEIGHTS:
        if (source / name).is_file():
            shutil.copyfile(source / name, out_dir / name)
    for sub in (p for p in source.iterdir() if p.is_dir() and (p / "config.json").is_file()):
        shutil.copytree(sub, out_dir / sub.name, dirs_exist_ok=True)
    temp = out_dir / ".model.safetensors.tmp"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(temp), metadata=metadata)
    os.replace(temp, out_dir / "model.safetensors")
    return out_dir
