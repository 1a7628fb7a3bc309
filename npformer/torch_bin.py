"""Read PyTorch ``.bin`` checkpoints (``torch.save``'s zip format) without torch and without running
code from the file.

A ``.bin`` file is a zip archive: ``ARCHIVE/data.pkl`` (a pickle of the state dict) and one file per
tensor storage (``ARCHIVE/data/KEY``). A pickle is a program: its ``GLOBAL`` and ``REDUCE`` opcodes
import and call whatever the file names. This reader never hands the file to ``pickle``: it walks the
opcodes with ``pickletools.genops`` (a parser that executes nothing) and interprets the few that
rebuild a state dict, on a stack of its own. Globals are resolved from an allowlist only, as
torch's weights-only loader restricts them: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the typed storage classes
(``torch.FloatStorage``...). Any other global or opcode stops the read with
``UnsafeCheckpointError`` naming it. Storages are read from the archive into NumPy arrays.
"""

from __future__ import annotations

import collections
import pickletools
import zipfile
from pathlib import Path

import numpy as np

# torch storage class -> NumPy dtype (bfloat16 is read as uint16 and widened to float32)
STORAGES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(ValueError):
    """The pickle asks for a global outside the allowed set (it could run code); nothing was run."""


class _Storage:
    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGES[name]


class _TensorView:
    """``torch._utils._rebuild_tensor_v2``'s arguments, kept until the tensor's name is known so that
    :func:`_materialize` can check them against the storage and name the tensor in its error."""

    def __init__(self, storage, offset, size, stride, *_):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _materialize(name: str, view: _TensorView, source: Path) -> np.ndarray:
    """The tensor a :class:`_TensorView` describes, as a new C-contiguous array. Every element it
    reads must lie inside its storage (as torch checks in ``set_``): the offset, sizes and strides
    are non-negative integers, the last element addressed is within the storage's length, and the
    tensor holds no more elements than the storage (no broadcast blow-up). Raises ``ValueError``
    naming the file and the tensor otherwise."""
    storage, offset = view.storage, view.offset
    size, stride = view.size, view.stride

    def ints(value) -> bool:
        return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)

    if (
        not isinstance(storage, np.ndarray)
        or not ints((offset,))
        or not ints(size)
        or not ints(stride)
        or len(size) != len(stride)
    ):
        raise ValueError(
            f"{source}: tensor {name!r} has an invalid layout (offset {offset!r}, size {size!r}, "
            f"stride {stride!r}): expected non-negative integers, one stride per dimension"
        )
    numel = int(np.prod(size, dtype=object))
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if numel else offset - 1
    if last >= storage.size or numel > storage.size:
        raise ValueError(
            f"{source}: tensor {name!r} (offset {offset}, size {size}, stride {stride}) reads past "
            f"its storage of {storage.size} values"
        )
    if not size:
        return storage[offset : offset + 1].reshape(()).copy()
    view_ = np.lib.stride_tricks.as_strided(storage[offset:], size, [st * storage.itemsize for st in stride], writeable=False)
    return np.ascontiguousarray(view_)


def _rebuild_parameter(data, *_):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _TensorView,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


MARK = object()
CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
PUSH_ARG = {
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "BININT",
    "BININT1",
    "BININT2",
    "LONG1",
    "INT",
    "LONG",
    "BINFLOAT",
    "FLOAT",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}
IGNORED = {"PROTO", "FRAME", "STOP"}


class _Reader:
    """A stack machine for the opcodes of a state-dict pickle; nothing from the file is imported or run."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, source: Path):
        self.archive, self.prefix, self.source = archive, prefix, source
        self.storages: dict[str, np.ndarray] = {}

    def refuse(self, what: str):
        raise UnsafeCheckpointError(
            f"{self.source}: the pickle asks for {what}, which is not needed to rebuild "
            f"tensors; refused, nothing from the file was run"
        )

    def resolve(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return _Storage(name)
        self.refuse(f"{module}.{name}")

    def run(self, data: bytes):
        stack: list = []
        memo: dict = {}

        def pop_mark() -> list:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] is MARK:
                    items = stack[i + 1 :]
                    del stack[i:]
                    return items
            raise ValueError("MARK missing")

        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in IGNORED:
                continue
            if name in PUSH_ARG:
                stack.append(arg)
            elif name in CONSTANTS:
                stack.append(CONSTANTS[name])
            elif name == "MARK":
                stack.append(MARK)
            elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
                stack.append({} if name == "EMPTY_DICT" else [] if name == "EMPTY_LIST" else ())
            elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
                n = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}.get(name)
                items = pop_mark() if n is None else [stack.pop() for _ in range(n)][::-1]
                stack.append(tuple(items))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[arg])
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                stack.append(self.resolve(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(self.resolve(str(module), str(attr)))
            elif name == "BINPERSID":
                stack.append(self.storage(stack.pop()))
            elif name == "REDUCE":
                args, func = stack.pop(), stack.pop()
                if not any(func is f for f in ALLOWED.values()):
                    self.refuse(f"a call of {func!r}")
                stack.append(func(*args))
            elif name == "BUILD":  # state set on an object (an OrderedDict's _metadata): not needed
                stack.pop()
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                stack[-1][key] = value
            elif name == "SETITEMS":
                items = pop_mark()
                stack[-1].update(zip(items[::2], items[1::2]))
            elif name == "APPEND":
                value = stack.pop()
                stack[-1].append(value)
            elif name == "APPENDS":
                items = pop_mark()
                stack[-1].extend(items)
            else:
                self.refuse(f"the opcode {name}")
        if len(stack) != 1:
            raise ValueError(f"the pickle leaves {len(stack)} values, not one")
        return stack[0]

    def storage(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise UnsafeCheckpointError(f"{self.source}: unexpected persistent id {str(pid)[:80]!r}")
        _, storage, key, _location, numel = pid
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise ValueError(f"{self.source}: storage {key!r} is missing from the archive") from None
            values = np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<"))
            if values.size < numel:
                raise ValueError(f"{self.source}: storage {key!r} holds {values.size} values, the pickle says {numel}")
            if storage.name == "BFloat16Storage":
                values = (values.astype(np.uint32) << 16).view(np.float32)
            self.storages[key] = values
        return self.storages[key]


def read_torch_bin(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save`` zip file, by name, as NumPy arrays (bfloat16 widened to
    float32). Raises :class:`UnsafeCheckpointError` for any global outside the tensor-rebuilding
    ones, and ``ValueError`` naming the file for a truncated, corrupted or legacy-format file."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{path} is not a readable torch zip checkpoint ({e}); legacy (pre-1.6) .bin files "
            f"are not supported: re-save them with a current torch"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            state = _Reader(archive, prefix, path).run(archive.read(pickles[0]))
        except UnsafeCheckpointError:
            raise
        except (ValueError, EOFError, zipfile.BadZipFile, TypeError, IndexError, KeyError) as e:
            raise ValueError(f"{path}: the pickle cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _TensorView) for k, v in state.items()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {name: _materialize(name, view, path) for name, view in state.items()}
