"""Output files for the command line (JSON lines, ``.npy`` arrays) that never lose a user's file.

* Checked before anything is written (:meth:`JsonLines.check`): the target is not a directory,
  not the input file, not an existing file unless ``overwrite``, and its directory is writable.
* Written to a temporary file beside the target and renamed into place when the run completes
  (``os.replace``, atomic on one file system), so an existing file is never truncated by a run
  that fails. A run that fails or is interrupted keeps what it did as ``TARGET.partial``.
* Special files (``/dev/stdout``, ``/dev/null``, a FIFO) are written directly.
* Standard JSON only: ``NaN`` / ``Infinity`` are refused (:class:`NonFiniteError`), never written.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


class OutputError(ValueError):
    """The output cannot be written where asked; one line."""


class NonFiniteError(ValueError):
    """A result holds NaN or infinity, which standard JSON cannot carry."""


def temp_beside(path: Path, mode: str):
    """An open temporary file in ``path``'s directory (``.NAME.*.tmp``), with the permissions a plain
    ``open()`` would give (mkstemp's are 0600), and its path. Raises ``OSError``."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})), Path(name)


def to_json(value):
    """JSON-ready copy: NumPy scalars and arrays become Python numbers and lists, a value with a
    ``to_json()`` method what it returns."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if callable(getattr(value, "to_json", None)):  # a SparseVector: [{"index", "value"}, ...]
        return value.to_json()
    return value


def dumps(record: dict) -> str:
    """One JSON line (no trailing newline). Raises :class:`NonFiniteError` for NaN / infinity."""
    try:
        return json.dumps(to_json(record), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise NonFiniteError("the result holds NaN or infinity (not valid JSON)") from None


class JsonLines:
    """Where results go: stdout (``path`` None) or a file, written as described in the module.

    Use :meth:`check` before loading anything, then ``open()``, ``write(record)`` for each result,
    and ``commit()`` at the end; on failure ``abandon()`` keeps the records written as ``.partial``.
    Raises :class:`OutputError` (from :meth:`check` / :meth:`open`) and ``OSError`` while writing.
    """

    def __init__(self, path: str | None, overwrite: bool = False, option: str = "--output"):
        self.path = Path(path) if path is not None else None
        self.overwrite = overwrite
        self.option = option  # how messages name the target
        self.file = None
        self.temp: Path | None = None
        self.written = 0  # records written
        self.partial: Path | None = None  # where abandon() kept them

    @property
    def direct(self) -> bool:
        """Written in place: stdout or a special file (device, FIFO), not a regular file."""
        return self.path is None or self.path.exists() and not self.path.is_file()

    def check(self, inputs: list[Path] = ()) -> None:
        """Refuse a target that is a directory, an input file, an existing file without
        ``overwrite``, or in a directory that is missing or not writable."""
        if self.path is None:
            return
        target = self.path
        if target.is_dir():
            raise OutputError(f"{self.option} {target} is a directory; give a file name")
        for source in inputs:
            if target.exists() and source.exists() and (target.resolve() == source.resolve() or target.samefile(source)):
                raise OutputError(f"{self.option} {target} is the input file; write the results to another file")
        if self.direct:
            return
        if target.exists() and not self.overwrite:
            raise OutputError(f"{self.option} {target} exists; pass --overwrite to replace it")
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise OutputError(f"cannot write {self.option} {target}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {self.option} {target}: directory {parent} is not writable")

    def open(self) -> None:
        if self.path is None:
            self.file = sys.stdout
            return
        if self.direct:
            self.file = open(self.path, "w", encoding="utf-8")
            return
        try:
            self.file, self.temp = temp_beside(self.path, "w")
        except OSError as e:
            raise OutputError(f"cannot write {self.option} {self.path}: {e.strerror}") from None

    def write(self, record: dict) -> None:
        """Write one record as a JSON line. Raises :class:`NonFiniteError` (nothing written) or OSError."""
        line = dumps(record)
        self.file.write(line + "\n")
        self.written += 1

    def commit(self) -> None:
        """Flush and move the finished file into place."""
        if self.file is sys.stdout:
            self.file.flush()
            return
        self.file.flush()
        if self.temp is not None:
            os.fsync(self.file.fileno())
        self.file.close()
        if self.temp is not None:
            os.replace(self.temp, self.path)
            self.temp = None

    def abandon(self) -> Path | None:
        """After a failure: keep the records written so far as ``TARGET.partial`` (returned), or
        remove the temporary file when there are none. Never touches the target itself."""
        if self.file is None or self.file is sys.stdout:
            return None
        try:
            self.file.close()
        except OSError:
            pass
        if self.temp is None:
            return None
        if self.written == 0:
            self.temp.unlink(missing_ok=True)
            return None
        self.partial = self.path.with_name(self.path.name + ".partial")
        os.replace(self.temp, self.partial)
        return self.partial


def save_array(target: JsonLines, array: np.ndarray | dict[str, np.ndarray]) -> None:
    """Write ``array`` as a ``.npy`` file (a dict of arrays: a ``.npz`` file) to ``target.path``
    (checked with :meth:`JsonLines.check` first): to a temporary file beside it, then renamed into
    place."""
    f, temp = temp_beside(target.path, "wb")
    try:
        with f:
            if isinstance(array, dict):
                np.savez(f, **array)
            else:
                np.save(f, array, allow_pickle=False)
        os.replace(temp, target.path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def load_array(path: str, option: str) -> np.ndarray | dict[str, np.ndarray]:
    """A ``.npy`` array, or a ``.npz`` file's arrays by name (never unpickled). Raises
    :class:`OutputError`-style ``ValueError`` naming the file."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {name: loaded[name] for name in loaded.files}
        return loaded
    except FileNotFoundError:
        raise ValueError(f"{option} {path} not found") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"{option} {path} is not a readable .npy / .npz array ({str(e).splitlines()[0]})") from None
