"""Writing checkpoints: an int8 copy of a float32 checkpoint (the format of :mod:`npformer.quantization`)
or a bfloat16 one (an ordinary safetensors checkpoint with BF16 Linear weights, as Transformers saves).

:func:`save_quantized` rounds with the same kernels the runtime uses, so loading the copy gives
the model that ``dtype="int8"`` (or ``"bfloat16"``) builds at load time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors import TensorSpec, serialize_file

from npformer import kernels
from npformer.kernels.bfloat16 import to_bfloat16
from npformer.files import write_checkpoint
from npformer.kernels.layout import pack_vnni
from npformer.architectures import architecture
from npformer.models.auto import DTYPES, load_architecture, open_checkpoint
from npformer.onnx_import import convert_onnx, find_onnx
from npformer.provenance import quantized_card
from npformer.quantization import SCALE_SUFFIX, SCHEME, is_quantized
from npformer.torch_bin import read_torch_bin
from npformer.version import __version__

COPY_DTYPES = ("int8", "bfloat16")  # what save_quantized (npformer quantize --dtype) writes


def save_quantized(
    src: str | Path,
    out_dir: str | Path,
    *,
    revision: str | None = None,
    overwrite: bool = False,
    source_name: str | None = None,
    dtype: str = "int8",
) -> Path:
    """Write an int8 (or ``dtype="bfloat16"``) copy of checkpoint ``src`` (directory or Hub id) to ``out_dir``.

    Encoder Linear weights and word embeddings become int8 + per-row float32 scales, or bfloat16
    (rounded to nearest even; stored ``BF16``, which Transformers loads too); every other tensor
    (biases, norms, position embeddings, task heads) is kept in float32. Config, tokenizer
    and sentence-transformers files are copied. ``AutoModel.from_pretrained(out_dir)`` and the
    pipelines load the result directly. Returns ``out_dir``.

    The weights are written to a temporary file and renamed into place once complete. The model card
    names the source as ``source_name`` (default: ``src``); a ``converted_from`` in the source's
    metadata is carried over.

    Raises ``FileNotFoundError``/``ValueError`` as loading does, and ``ValueError`` for a ``dtype``
    other than int8 and bfloat16, if ``src`` is already quantized, ``out_dir`` is the source
    directory, or ``out_dir`` already holds weights and ``overwrite`` is not set.
    """
    if dtype not in COPY_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} for a copy; use one of {COPY_DTYPES}")
    directory, config, weights = open_checkpoint(src, revision)
    if is_quantized(weights):
        raise ValueError(f"{directory} is already quantized ({SCHEME})")
    out_dir = Path(out_dir)
    if out_dir.resolve() == directory.resolve() or out_dir.exists() and out_dir.samefile(directory):
        raise ValueError(f"the output directory {out_dir} is the source checkpoint; write the int8 copy elsewhere")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the output {out_dir} is a file; give a directory")
    existing = [p.name for p in out_dir.glob("*.safetensors*")] if out_dir.is_dir() else []
    if existing and not overwrite:
        raise ValueError(f"{out_dir} already holds {existing[0]}; pass --overwrite (overwrite=True) to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = architecture(config.model_type)(config, weights)  # reads and validates every encoder tensor
    tensors, packed_shapes, bf16 = _converted_tensors(weights, encoder.quantized_names(), dtype)
    source_name = source_name or (str(src) if not Path(str(src)).exists() else str(directory))
    temp = out_dir / ".model.safetensors.tmp"
    scheme = {"format": "np", "quantization": SCHEME, "layout": json.dumps({"packed": packed_shapes})}
    metadata = {
        **(scheme if dtype == "int8" else {"format": "pt"}),  # "pt": Transformers reads the bfloat16 copy
        "source": Path(source_name).name,
        **{k: v for k, v in weights.metadata.items() if k == "converted_from"},
    }
    specs = {  # every array is C-contiguous (made so by _converted_tensors)
        key: TensorSpec(
            dtype="bfloat16" if key in bf16 else arr.dtype.name, shape=arr.shape, data_ptr=arr.ctypes.data, data_len=arr.nbytes
        )
        for key, arr in tensors.items()
    }
    serialize_file(specs, str(temp), metadata=metadata)
    os.replace(temp, out_dir / "model.safetensors")
    for item in directory.iterdir():
        if item.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".onnx") or item.name.startswith("."):
            continue
        if item.resolve() == out_dir.resolve():  # the output directory may sit inside the source
            continue
        if item.name == "model.safetensors.index.json":
            continue
        target = out_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    sizes = {
        f"model.safetensors ({dtype})": (out_dir / "model.safetensors").stat().st_size,
        "source weights (float32)": sum(f.stat().st_size for f in weights.files),
    }
    (out_dir / "README.md").write_text(quantized_card(directory, source_name, __version__, sizes, dtype), encoding="utf-8")
    return out_dir


def _converted_tensors(weights, names: list[str], dtype: str) -> tuple[dict, dict, set]:
    """The tensors of a copy: ``names`` (the Linear weights, then the word embeddings) as int8 (Linear
    weights packed) with ``_scale`` beside, or as bfloat16 bits; the rest as stored. Returns
    ``(tensors, packed shapes by name, names stored bfloat16)``."""
    *linears, embeddings = [weights.resolve(name) for name in names]
    linears = set(linears)
    tensors, packed_shapes, bf16 = {}, {}, set()
    for key, arr in weights.tensors.items():
        if key not in linears and key != embeddings:
            tensors[key] = np.ascontiguousarray(arr)
        elif dtype == "bfloat16":
            tensors[key] = to_bfloat16(arr)
            bf16.add(key)
        else:
            q, s = kernels.gemm_int8.quantize_rows(np.ascontiguousarray(arr, dtype=np.float32))
            tensors[key + SCALE_SUFFIX] = s
            tensors[key] = pack_vnni(q) if key in linears else q
            if key in linears:
                packed_shapes[key] = list(q.shape)
    return tensors, packed_shapes, bf16


def copy_checkpoint(src: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Copy checkpoint directory ``src`` (weights, config, tokenizer and sentence-transformers
    files; not hidden files) into ``out_dir``; returns ``out_dir``. Each file is copied to a
    temporary name and renamed into place.

    Raises ``FileExistsError`` when ``out_dir`` is ``src`` or already holds a file of the same name
    (unless ``overwrite``), ``FileNotFoundError`` when ``src`` is not a directory.
    """
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {src}")
    if out_dir.exists() and (not out_dir.is_dir() or out_dir.samefile(src)):
        raise FileExistsError(f"{out_dir} is {'the source checkpoint' if out_dir.is_dir() else 'a file'}; give another directory")
    items = [item for item in sorted(src.iterdir()) if not item.name.startswith(".")]
    clashes = [item.name for item in items if (out_dir / item.name).exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {clashes[0]}; pass overwrite=True to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in items:
        if item.is_dir():
            shutil.copytree(item, out_dir / item.name, dirs_exist_ok=True)
        else:
            temp = out_dir / f".{item.name}.tmp"
            shutil.copy2(item, temp)
            os.replace(temp, out_dir / item.name)
    return out_dir


def quantize(model, out_dir: str | Path | None = None):
    """Quantize a model to int8: an in-memory encoder / task model, or a checkpoint path.

    * ``quantize(model)`` swaps the Linear weights (and word embeddings) of a loaded encoder or
      task model for :class:`QuantizedTensor` in place and returns it;
    * ``quantize(path_or_id, out_dir)`` writes a quantized checkpoint (see :func:`save_quantized`)
      and returns ``out_dir``.
    """
    if isinstance(model, (str, Path)):
        if out_dir is None:
            raise ValueError("quantize(path, out_dir): give the directory to write the int8 checkpoint to")
        return save_quantized(model, out_dir)
    if out_dir is not None:
        raise ValueError("to write a quantized checkpoint pass the source checkpoint path, not a loaded model")
    getattr(model, "encoder", model).quantize_()
    return model


def convert(src: str | Path, out_dir: str | Path, *, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Convert the checkpoint a user has into npformer's format in ``out_dir``: a PyTorch ``.bin``
    (:func:`convert_bin`, bit for bit) or an ONNX export, float32, int8 or 4-bit
    (:func:`npformer.onnx_import.convert_onnx`, dequantized to float32 exactly). ``dtype="int8"``
    then quantizes npformer's way (:func:`save_quantized`). ``src`` is a file or a directory; a
    directory with both takes the ``.bin`` (the original float weights).

    The result is written to a temporary directory beside ``out_dir``, loaded once as the model its
    config's ``architectures`` names (so a checkpoint that would not load is never left behind),
    then moved into ``out_dir``. Returns ``out_dir``.

    Raises ``FileNotFoundError`` (nothing to convert), ``FileExistsError`` (``out_dir`` is the
    source, or not empty without ``overwrite``), ``ValueError`` for an unknown dtype, and the
    readers' errors (:class:`~npformer.torch_bin.UnsafeCheckpointError`,
    :class:`~npformer.onnx_import.OnnxImportError`, ``ImportError`` without the ``onnx`` extra).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {DTYPES}")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"nothing to convert: {src} does not exist")
    if src.is_file():
        write = convert_onnx if src.suffix == ".onnx" else _write_bin
    elif any(src.glob("*.bin")) or any(src.glob("*.bin.index.json")):
        write = _write_bin
    elif find_onnx(src) is not None:
        write = convert_onnx
    else:
        raise FileNotFoundError(
            f"nothing to convert in {src}: no pytorch_model.bin (or its shards) and no ONNX "
            f"export (model.onnx, onnx/model_quantized.onnx, ...)"
        )
    return _checked_conversion(write, src, Path(out_dir), dtype, overwrite)


def convert_bin(src: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Convert a PyTorch checkpoint (``pytorch_model.bin``, or the shards of a
    ``pytorch_model.bin.index.json``) to safetensors in ``out_dir``, without torch and without
    running code from the file (see :mod:`npformer.torch_bin`). Tensors are copied bit for bit
    (bfloat16 widened to float32); config, tokenizer and sentence-transformers files come along;
    the safetensors metadata names the source (``converted_from``) and the npformer version. The
    result is checked by loading it, as :func:`convert` does.

    Raises ``FileNotFoundError`` when ``src`` has no .bin, :class:`~npformer.torch_bin.UnsafeCheckpointError`
    for a pickle asking for code, ``ValueError`` for a corrupted file, ``FileExistsError`` when
    ``out_dir`` exists (unless ``overwrite``) or is ``src``.
    """
    return _checked_conversion(_write_bin, Path(src), Path(out_dir), "float32", overwrite)


def _checked_conversion(write, src: Path, out_dir: Path, dtype: str, overwrite: bool) -> Path:
    """``write(src, directory)`` into a temporary directory beside ``out_dir``, load the result once,
    then move it (or its int8 copy) into ``out_dir``; the temporary directory is always removed."""
    directory = src.parent if src.is_file() else src
    if out_dir.resolve() in (directory.resolve(), src.resolve()):
        raise FileExistsError(f"{out_dir} is the source; write the conversion elsewhere")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another directory or pass --overwrite")
    temp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        write(src, temp)
        try:
            load_architecture(temp)  # refuse a conversion that does not load, before anything is replaced
        except ValueError as e:
            raise ValueError(f"{src} does not convert to a complete model: {str(e).replace(str(temp), str(out_dir))}") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*out_dir.glob("*.safetensors"), out_dir / "model.safetensors.index.json"]:
            stale.unlink(missing_ok=True)  # --overwrite: no old shard index may outrank the new weights
        if dtype != "float32":
            return save_quantized(temp, out_dir, overwrite=True, source_name=str(src), dtype=dtype)
        for item in temp.iterdir():
            if item.is_dir():
                shutil.copytree(item, out_dir / item.name, dirs_exist_ok=True)
            else:
                os.replace(item, out_dir / item.name)
        return out_dir
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _write_bin(src: Path, out_dir: Path) -> Path:
    """The tensors of ``src`` (a .bin file, or a directory with ``pytorch_model.bin`` or its shards)
    as ``out_dir/model.safetensors`` beside the source's other files (see :func:`convert_bin`)."""
    directory = src.parent if src.is_file() else src
    index = directory / "pytorch_model.bin.index.json"
    if src.is_file():
        files = [src]
    elif index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        files = [directory / "pytorch_model.bin"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no {missing[0].name} in {directory}")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(read_torch_bin(f))
    metadata = {"format": "pt", "converted_from": ", ".join(f.name for f in files), "npformer_version": __version__}
    return write_checkpoint(tensors, metadata, directory, out_dir)
