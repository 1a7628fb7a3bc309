"""Input records for the command line: texts from arguments, a file or stdin, one record at a time.

A record is one input row with where it came from (``line``) and either its ``text`` or the
``error`` that makes it unusable (not a string, empty, invalid UTF-8, a JSON line that does not
parse...). Bad records are reported, not raised, so that one bad row never sinks a run.
Everything that concerns the whole input (the file is missing, a column is not in the header) is
checked when the :class:`Source` is made, before any output is written.

Formats: ``.txt`` (one text per line; a blank line is an error record, so that output lines align
with input lines), ``.jsonl`` (one JSON object per
line), ``.csv`` / ``.tsv`` (header row; ``--column`` picks the text; ``--delimiter`` overrides the
suffix's). Files are read as UTF-8 with an optional byte-order mark (as Excel writes it); an
invalid byte makes that record bad and names its line and byte. Reading streams: memory does not
grow with the file.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

TABULAR = {".csv": ",", ".tsv": "\t"}
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # fields longer than 131,072 characters are texts too


class InputError(ValueError):
    """A problem with the input as a whole (missing file, unknown column); one line."""


@dataclass
class Record:
    """One input row. ``line`` is its 1-based line in the file (the argument's position for texts
    given as arguments); ``fields`` holds every column / key of the row; ``text`` is the text to
    process, or None when ``error`` says why the row cannot be used."""

    line: int
    text: str | None
    fields: dict = field(default_factory=dict)
    error: str | None = None


def _bad_utf8(value: str) -> str | None:
    """A description of the first byte that was not UTF-8 (decoded with ``surrogateescape``), or
    of a lone surrogate (from a JSON ``\\ud800`` escape); None when ``value`` can be written as UTF-8."""
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        i, ch = e.start, value[e.start]
        if "\udc80" <= ch <= "\udcff":
            return f"invalid UTF-8 (byte 0x{ord(ch) - 0xDC00:02x} at character {i})"
        return f"a lone surrogate U+{ord(ch):04X} at character {i}"


def check_text(value, name: str) -> str | None:
    """Why ``value`` cannot be a text (None when it can): not a string, empty, invalid UTF-8."""
    if value is None:
        return f"no field {name!r} (choose the field with --column)"
    if not isinstance(value, str):
        kind = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
            type(value), type(value).__name__
        )
        return f"field {name!r} is {kind} ({json.dumps(value)[:40]}), expected a string"
    bad = _bad_utf8(value)
    if bad:
        return f"field {name!r} has {bad}"
    if not value.strip():
        return f"field {name!r} is empty"
    return None


class Source:
    """The records of one input: ``texts`` given as arguments, else file ``path``, else stdin.

    Args:
        path: a ``.txt``, ``.jsonl``, ``.csv`` or ``.tsv`` file (None: arguments or stdin).
        texts: texts given on the command line.
        column: the field / column holding the text (default ``text``; ``.txt`` and stdin have none).
        delimiter: the field separator of a CSV/TSV file (default ``,`` for .csv, tab for .tsv).
        extra_columns: other fields each record must have as valid text (e.g. a QA context column).
        keep_columns: the input fields each output record carries under ``"input"`` (default: all
            of a .jsonl / .csv / .tsv row except the text; ``()``: none).
        stdin_format: ``"txt"`` (a text per line) or ``"jsonl"`` (a JSON object per line) for stdin.

    Raises:
        InputError: no input at all, the file is missing or unreadable, the header lacks the column.
    """

    def __init__(
        self,
        path: str | None,
        texts: list[str],
        column: str | None = None,
        delimiter: str | None = None,
        extra_columns: tuple[str, ...] = (),
        keep_columns: tuple[str, ...] | None = None,
        stdin_format: str = "txt",
    ):
        self.texts = texts
        self.column = column or "text"
        self.extra_columns = extra_columns
        self.keep_columns = keep_columns
        self.path = Path(path) if path is not None else None
        self.name = str(self.path) if self.path is not None else "stdin"
        self.delimiter = delimiter
        if texts:
            self.kind, self.name = "args", "argument"
            return
        if self.path is None:
            if sys.stdin is None or sys.stdin.isatty():
                raise InputError("no input: give texts as arguments, --input FILE, or pipe lines to stdin")
            if stdin_format not in ("txt", "jsonl"):
                raise InputError(f"--stdin-format must be txt or jsonl, got {stdin_format!r}")
            self.kind = "lines" if stdin_format == "txt" else "jsonl"
            return
        if not self.path.exists():
            raise InputError(f"input file not found: {self.path}")
        if not self.path.is_file():
            raise InputError(f"--input {self.path} is not a file")
        suffix = self.path.suffix.lower()
        self.kind = "table" if suffix in TABULAR or delimiter else "jsonl" if suffix == ".jsonl" else "lines"
        if self.kind == "table":
            self.delimiter = delimiter or TABULAR[suffix]
            if len(self.delimiter) != 1:
                raise InputError(f"--delimiter must be one character, got {self.delimiter!r}")
        try:
            with self._open() as f:
                if self.kind == "table":
                    header = next(self._reader(f), None)
                    if header is None:
                        raise InputError(f"{self.path} is empty: a {suffix} file needs a header row")
                    bad = next((c for c in header if _bad_utf8(c)), None)
                    if bad is not None:
                        raise InputError(f"{self.path} line 1 (the header) has {_bad_utf8(bad)}")
                    for name in (self.column, *extra_columns):
                        if name not in header:
                            raise InputError(
                                f"column {name!r} not in {self.path.name} (columns: {', '.join(header)}); "
                                f"choose one with --column"
                            )
        except OSError as e:
            raise InputError(f"cannot read {self.path}: {e.strerror}") from None

    def _open(self):
        # utf-8-sig drops a leading byte-order mark; surrogateescape keeps invalid bytes visible
        return open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="")

    def _reader(self, f):
        return csv.reader(f, delimiter=self.delimiter, quoting=csv.QUOTE_NONE if self.delimiter == "\t" else csv.QUOTE_MINIMAL)

    def __iter__(self) -> Iterator[Record]:
        if self.kind == "args":
            for n, text in enumerate(self.texts, 1):
                yield self._record(n, {"text": text}, "text")
        elif self.path is None:
            stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape")
            yield from (self._lines if self.kind == "lines" else self._jsonl)(stream)
        else:
            with self._open() as f:
                yield from {"lines": self._lines, "jsonl": self._jsonl, "table": self._table}[self.kind](f)

    def where(self, n: int) -> str:
        """How messages name record ``n``: ``FILE line n`` (``stdin line n``, ``argument n``)."""
        return f"argument {n}" if self.kind == "args" else f"{self.name} line {n}"

    def kept(self, record: Record) -> dict:
        """The input fields ``record``'s output carries (see ``keep_columns``): all but the text,
        of a .jsonl / .csv / .tsv row."""
        if self.kind not in ("jsonl", "table"):
            return {}
        names = self.keep_columns if self.keep_columns is not None else record.fields
        return {k: record.fields[k] for k in names if k in record.fields and k != self.column}

    def count(self) -> int | None:
        """About how many records a file holds (its lines, less a header), for a progress bar."""
        if self.path is None or self.kind == "args":
            return None
        with open(self.path, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return max(lines - (self.kind == "table"), 0)

    def _record(self, n: int, fields: dict, name: str) -> Record:
        error = check_text(fields.get(name), name)
        for extra in self.extra_columns:
            error = error or (check_text(fields.get(extra), extra) if extra in fields else None)
        for key, value in fields.items():  # every field goes to the output: no invalid UTF-8 there
            bad = _bad_utf8(value) if error is None and key != name and isinstance(value, str) else None
            if bad:
                error = f"field {key!r} has {bad}"
        text = fields.get(name) if error is None else None
        return Record(n, text, fields, f"{self.where(n)}: {error}" if error else None)

    def _lines(self, f) -> Iterator[Record]:
        for n, line in enumerate(f, 1):  # a blank line keeps its place, as an error record
            line = line.rstrip("\r\n")
            if line.strip():
                yield self._record(n, {"text": line}, "text")
            else:
                yield Record(n, None, {}, f"{self.where(n)}: the line is empty")

    def _jsonl(self, f) -> Iterator[Record]:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            bad = _bad_utf8(line)
            if bad:
                yield Record(n, None, {}, f"{self.name} line {n}: {bad}")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield Record(n, None, {}, f"{self.name} line {n}: not JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                yield Record(n, None, {}, f"{self.name} line {n}: a JSON {type(row).__name__}, expected an object")
                continue
            yield self._record(n, row, self.column)

    def _table(self, f) -> Iterator[Record]:
        reader = self._reader(f)
        header = next(reader)
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield Record(line, None, {}, f"{self.name} line {line}: {e}")
                line = reader.line_num + 1
                continue
            if row:
                if len(row) != len(header):
                    yield Record(
                        line,
                        None,
                        {},
                        f"{self.name} line {line}: {len(row)} fields, the header has "
                        f"{len(header)} (is the delimiter {self.delimiter!r} right?)",
                    )
                else:
                    yield self._record(line, dict(zip(header, row)), self.column)
            line = reader.line_num + 1
