"""Read PyTorch ``.bin`` checkpoints (``torch.save``'s zip format) without torch and without running
code from the file.

A ``.bin`` file is a zip archive: ``ARCHIVE/data.pkl`` (a pickle of the state dict) and one file per
tensor storage (``ARCHIVE/data/KEY``). Unpickling can call any importable function the file names,
so this reader allows only the globals that rebuild tensors and ordered dicts, as
``torch.load(weights_only=True)`` does (torch's ``_weights_only_unpickler``): ``collections.
OrderedDict``, ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the typed storage
classes (``torch.FloatStorage``...). Any other global stops the read with ``UnsafeCheckpointError``
naming it, before anything is called. Storages are read from the archive into NumPy arrays.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

# torch storage class -> NumPy dtype (bfloat16 is read as uint16 and widened to float32)
STORAGES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": np.uint16,
            "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
            "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class UnsafeCheckpointError(ValueError):
    """The pickle asks for a global outside the allowed set (it could run code); nothing was run."""


class _Storage:
    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGES[name]


def _rebuild_tensor(storage, offset, size, stride, *_):
    """``torch._utils._rebuild_tensor_v2``: a view of ``storage`` (a 1-D array) -> a new C array."""
    size, stride = tuple(size), tuple(stride)
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride],
                                           writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_):
    return data


ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
           ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
           ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: Path):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return _Storage(name)
        raise UnsafeCheckpointError(f"{self.source}: the pickle asks for {module}.{name}, which is not needed to "
                                    f"rebuild tensors; refused, nothing from the file was run")

    def persistent_load(self, pid):
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
        raise ValueError(f"{path} is not a readable torch zip checkpoint ({e}); legacy (pre-1.6) .bin files "
                         f"are not supported: re-save them with a current torch") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][:-len("data.pkl")]
        try:
            with archive.open(pickles[0]) as f:
                state = _Unpickler(f, archive, prefix, path).load()
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, TypeError, IndexError) as e:
            raise ValueError(f"{path}: the pickle cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return dict(state)
