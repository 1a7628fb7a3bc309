"""safetensors checkpoints by memory map: tensor lookup, key prefixes, dtype conversion, checks.

The ``safetensors`` library validates each file and reads its header and metadata; the tensors
themselves are read-only NumPy views into one ``mmap`` of the file, so a float32 checkpoint costs no
copy (the library's ``get_tensor`` returns an owned copy of every tensor, which would double the
memory). float16 / bfloat16 tensors are converted to float32 once, at load time.
Never unpickles: a directory holding only ``pytorch_model.bin`` gets an error saying how to convert it.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np
from safetensors import safe_open

from npformer.files import read_json
from npformer.hub import hub_commit

_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "I8": np.int8,
    "U8": np.uint8,
    "I32": np.int32,
    "I64": np.int64,
    "F64": np.float64,
    "BOOL": np.bool_,
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_CHUNK = 1 << 20  # elements per finiteness check (a 1 MB temporary)


def first_non_finite(arr: np.ndarray) -> int | None:
    """Flat index of the first NaN or infinity in ``arr`` (None if all are finite), checked in
    chunks so that a large tensor needs no tensor-sized temporary."""
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        ok = np.isfinite(flat[start : start + _CHUNK])
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def _shards(index: Path) -> list[Path]:
    """The shard files a ``model.safetensors.index.json`` names. Raises ``ValueError`` naming the
    index when it is not JSON, has no ``weight_map`` of names to files, or names a file outside the
    checkpoint directory (an absolute path, ``..``, or a symlink pointing out; a Hub cache
    snapshot's links into its own ``blobs/`` are allowed); ``FileNotFoundError`` for missing shards."""
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ValueError(f"{index}: expected an object with a 'weight_map' of tensor names to shard files")
    directory = index.parent.resolve()
    roots = [directory]
    if hub_commit(directory):  # huggingface_hub cache: snapshots/<commit>/* -> ../../blobs/<sha>
        roots.append(directory.parent.parent / "blobs")
    files = []
    for name in sorted(set(weight_map.values())):
        path = index.parent / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not any(path.resolve().is_relative_to(root) for root in roots):
            raise ValueError(f"{index}: shard {name!r} lies outside the checkpoint directory; refusing to read it")
        files.append(path)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists shards that are missing: {missing}")
    return files


def modern_name(key: str) -> str:
    """The name Transformers loads a tensor under: the legacy ``LayerNorm.gamma`` / ``LayerNorm.beta``
    of early checkpoints ported from TensorFlow become ``LayerNorm.weight`` / ``LayerNorm.bias``
    (``PreTrainedModel._fix_state_dict_key_on_load``); every other name is unchanged."""
    for legacy, modern in (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias")):
        if key.endswith(legacy):
            return key[: -len(legacy)] + modern
    return key


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


class Weights:
    """The tensors of a checkpoint directory (``model.safetensors`` or a sharded index).

    ``get(name)`` returns a read-only view ``np.ndarray`` (float tensors as float32), trying
    ``name`` and then ``prefix + name`` for the task prefixes (``bert.``, ``distilbert.``).
    ``metadata`` is the ``__metadata__`` dict of the (first) file.

    Raises:
        FileNotFoundError: no safetensors file (with a hint when ``pytorch_model.bin`` is there).
    """

    def __init__(self, directory: str | Path, prefixes: tuple[str, ...] = ("",)):
        directory = Path(directory)
        files = self._files(directory)
        self.directory = directory
        self.tensors: dict[str, np.ndarray] = {}
        self.metadata: dict[str, str] = {}
        self._stored: dict[str, tuple[Path, str]] = {}  # key -> (file, safetensors dtype)
        self._ranges: dict[str, tuple[mmap.mmap, int, int]] = {}  # key -> (mapping, first byte, end)
        for file in files:
            try:
                with safe_open(file, framework="numpy") as f:  # validates header and offsets
                    metadata = dict(f.metadata() or {})
            except Exception as e:  # SafetensorError, OSError: truncated file, bad header, offsets out of range
                raise ValueError(f"{file} is not a readable safetensors file: {str(e).splitlines()[0]}") from None
            if not self.metadata:
                self.metadata = metadata
            self.tensors.update(self._map(file))
        self.files = files
        self.prefixes = prefixes
        self.used: set[str] = set()

    @staticmethod
    def _files(directory: Path) -> list[Path]:
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {directory}")
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            return _shards(index)
        if (directory / "model.safetensors").is_file():
            return [directory / "model.safetensors"]
        pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
        if pickled:
            raise FileNotFoundError(
                f"{directory} has {pickled[0]} but no model.safetensors. npformer never unpickles checkpoints "
                f"when loading (a pickle can run arbitrary code). Convert it once, without torch and without "
                f"running code from the file: `npformer convert {directory} {directory}-safetensors`"
            )
        raise FileNotFoundError(f"no model.safetensors (or model.safetensors.index.json) in {directory}")

    def _map(self, file: Path) -> dict[str, np.ndarray]:
        with open(file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data = np.frombuffer(mapping, dtype=np.uint8)  # read-only views into one mapping
        base = 8 + header_len
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                raise ValueError(f"{file}: tensor {name!r} has unsupported dtype {info['dtype']}")
            if modern_name(name) != name:
                if modern_name(name) in header:
                    raise ValueError(
                        f"{file}: holds both {name!r} and {modern_name(name)!r}, the same tensor "
                        "under its legacy and its current name"
                    )
                name = modern_name(name)
            start, end = info["data_offsets"]
            self._ranges[name] = (mapping, base + start, base + end)
            self._stored[name] = (file, info["dtype"])
            arr = data[base + start : base + end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
            if info["dtype"] == "BF16":
                arr = _bf16_to_f32(arr)
            elif info["dtype"] in ("F16", "F64"):
                arr = arr.astype(np.float32)
            out[name] = arr
        return out

    def resolve(self, name: str) -> str | None:
        """The stored key for ``name`` (with the first matching prefix), or None."""
        for prefix in self.prefixes:
            if prefix + name in self.tensors:
                return prefix + name
        return None

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def stored(self, name: str) -> tuple[str, str, Path]:
        """``(key, safetensors dtype, file)`` of tensor ``name``. Raises ``KeyError`` naming it when missing."""
        key = self.resolve(name)
        if key is None:
            raise KeyError(
                f"tensor {name!r} is missing from the checkpoint in {self.directory} (looked for prefixes {list(self.prefixes)})"
            )
        file, dtype = self._stored[key]
        return key, dtype, file

    def stored_dtypes(self) -> list[str]:
        """The dtypes the checkpoint's tensors are stored as, sorted, by NumPy's names (``bfloat16``
        for BF16, which NumPy lacks): what the file holds, not the float32 that ``get`` returns."""
        return sorted({"bfloat16" if dtype == "BF16" else np.dtype(_DTYPES[dtype]).name for _, dtype in self._stored.values()})

    def raw(self, key: str) -> np.ndarray:
        """The tensor stored under ``key`` as it is in the file (any dtype, unchecked; float16 /
        bfloat16 as float32), for a caller that owns its format (e.g. int8 tensors)."""
        self.used.add(key)
        return self.tensors[key]

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Float tensor ``name`` as float32; with ``shape``, checked against it.

        Validated on first use: stored as a float type (F32, F16, BF16, F64) and all values finite.
        Raises ``KeyError`` naming the tensor when it is missing, and ``ValueError`` naming the
        file and tensor when its dtype, values or shape (against what the config implies) are wrong.
        """
        key, dtype, file = self.stored(name)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"{file}: tensor {key!r} is stored as {dtype}; expected a float type ({', '.join(FLOAT_DTYPES)})")
        arr = self.tensors[key]
        if key not in self.used:
            self._check_finite(key)
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{file}: tensor {key!r} has shape {tuple(arr.shape)} but the config implies {tuple(shape)}")
        self.used.add(key)
        return arr

    def _check_finite(self, key: str) -> None:
        bad = first_non_finite(self.tensors[key])
        if bad is not None:
            file, _ = self._stored[key]
            value = self.tensors[key].reshape(-1)[bad]
            raise ValueError(f"{file}: tensor {key!r} holds {value} at flat index {bad}; weights must be finite")
        if self.tensors[key].nbytes >= _CHUNK:
            self.release(key)  # the check read every page; uses fault them back in from the file

    def release(self, name: str) -> None:
        """Drop the pages of tensor ``name`` from this process's memory (``madvise(MADV_DONTNEED)``)
        once a copy of it has been made (packed weights): the file stays mapped and a later read
        faults the pages back in, so nothing breaks, but peak RSS holds each weight once."""
        key = self.resolve(name)
        if key is None or key not in self._ranges or not hasattr(mmap, "MADV_DONTNEED"):
            return
        mapping, start, end = self._ranges[key]
        start -= start % mmap.PAGESIZE  # whole pages; a shared neighbour page just faults back in
        mapping.madvise(mmap.MADV_DONTNEED, start, end - start)

    def replace(self, name: str, value: np.ndarray, source: Path) -> None:
        """Serve ``value`` (float32) for tensor ``name`` from now on, in place of the stored one (or
        as a new tensor, named without prefix); ``source`` is named in later errors. Adapters use it
        to load merged weights (see :mod:`npformer.adapters`)."""
        key = self.resolve(name) or name
        self.tensors[key] = np.ascontiguousarray(value, dtype=np.float32)
        self._stored[key] = (Path(source), "F32")
        self._ranges.pop(key, None)
        self.used.discard(key)

    def unused(self, namespaces: tuple[str, ...]) -> list[str]:
        """Keys under one of ``namespaces`` (after the prefix) that no module asked for."""
        out = []
        for key in self.tensors:
            if key in self.used or key.endswith("position_ids"):
                continue
            bare = next((key[len(p) :] for p in self.prefixes if p and key.startswith(p)), key)
            if bare.startswith(namespaces):
                out.append(key)
        return sorted(out)
