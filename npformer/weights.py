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

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I8": np.int8, "U8": np.uint8,
           "I32": np.int32, "I64": np.int64, "F64": np.float64, "BOOL": np.bool_}


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
        self._ranges: dict[str, tuple[mmap.mmap, int, int]] = {}  # key -> (mapping, first byte, end)
        for file in files:
            with safe_open(file, framework="numpy") as f:  # validates header and offsets
                if not self.metadata:
                    self.metadata = dict(f.metadata() or {})
            self.tensors.update(self._map(file))
        self.prefixes = prefixes
        self.used: set[str] = set()
        layout = json.loads(self.metadata.get("layout", "{}"))
        self.packed_shapes: dict[str, list[int]] = layout.get("packed", {})

    @staticmethod
    def _files(directory: Path) -> list[Path]:
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {directory}")
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [directory / f for f in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{index} lists shards that are missing: {missing}")
            return files
        if (directory / "model.safetensors").is_file():
            return [directory / "model.safetensors"]
        pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
        if pickled:
            raise FileNotFoundError(
                f"{directory} has {pickled[0]} but no model.safetensors. npformer never unpickles checkpoints "
                f"(loading a pickle can run arbitrary code). Convert it once where torch is installed: "
                f"`transformers.AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`")
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
                raise ValueError(f"{file}: tensor {name} has unsupported dtype {info['dtype']}")
            start, end = info["data_offsets"]
            self._ranges[name] = (mapping, base + start, base + end)
            arr = data[base + start: base + end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
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

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Tensor ``name``; with ``shape``, checked against it.

        Raises ``KeyError`` naming the tensor when it is missing and ``ValueError`` naming the
        tensor and both shapes when the shape differs from what the config implies.
        """
        key = self.resolve(name)
        if key is None:
            raise KeyError(f"tensor {name!r} is missing from the checkpoint in {self.directory} "
                           f"(looked for prefixes {list(self.prefixes)})")
        arr = self.tensors[key]
        if arr.dtype == np.int8 and key + "_scale" in self.tensors:  # an int8 tensor of a quantized checkpoint
            from npformer.quantization import QuantizedTensor

            self.used.add(key + "_scale")
            packed_shape = self.packed_shapes.get(key)
            if packed_shape is None:
                arr = QuantizedTensor(arr, self.tensors[key + "_scale"])
            else:
                arr = QuantizedTensor(None, self.tensors[key + "_scale"], packed=arr, shape=packed_shape)
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise ValueError(f"tensor {key!r} has shape {tuple(arr.shape)} but the config implies {tuple(shape)}")
        self.used.add(key)
        return arr

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

    def unused(self, namespaces: tuple[str, ...]) -> list[str]:
        """Keys under one of ``namespaces`` (after the prefix) that no module asked for."""
        out = []
        for key in self.tensors:
            if key in self.used or key.endswith("position_ids"):
                continue
            bare = next((key[len(p):] for p in self.prefixes if p and key.startswith(p)), key)
            if bare.startswith(namespaces):
                out.append(key)
        return sorted(out)
