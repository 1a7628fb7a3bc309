"""Reading a checkpoint's text files (JSON configs, ``vocab.txt``) with one-line errors that name
the file, line and problem instead of a decoder's traceback."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(file: Path):
    """The JSON value in ``file``. Raises ``ValueError`` naming the file when it is empty, not
    UTF-8, or not JSON (with the line and column of the problem)."""
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


def read_vocab(file: Path) -> list[str]:
    """Tokens of a ``vocab.txt``, one per line. Raises ``ValueError`` naming the file and line when
    it is not UTF-8 text (a binary file, say)."""
    tokens = []
    with open(file, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                tokens.append(raw.decode("utf-8").rstrip("\n"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{file} line {n} is not UTF-8 text (byte {e.start}: 0x{raw[e.start]:02x}); "
                                 f"a vocab.txt holds one token per line") from None
    return tokens
