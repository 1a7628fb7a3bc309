"""Reading an ONNX export of an encoder (BERT, DistilBERT, RoBERTa...) back into Transformers-named float32 tensors.

Exports made by ``torch.onnx.export`` (the TorchScript exporter, which Optimum and transformers.js use)
keep each module's path in its node names (``/bert/encoder/layer.0/attention/self/query/MatMul``; torch's
newer dynamo exporter keeps it in each node's ``pkg.torch.onnx.name_scopes`` metadata) but not in its
weights: constant folding stores every Linear weight transposed, as ``onnx::MatMul_<n>``. So each weight
is found by its place in the graph, never by its initializer name:

* Linear: ``MatMul`` (B = weight transposed) -> ``Add`` (the bias); ``Gemm`` (``transB``, C = bias);
  ONNX Runtime's ``quantize_dynamic``: ``DynamicQuantizeLinear`` -> ``MatMulInteger`` (B int8/uint8,
  B's zero point) -> ``Cast`` -> ``Mul`` (activation scale x weight scale) -> ``Add``; the 4-bit
  ``com.microsoft.MatMulNBits`` (``MatMulNBitsQuantizer``, transformers.js ``model_q4.onnx``);
* embeddings: ``Gather`` of a table, optionally with ``DequantizeLinear`` before or after it;
* layer norm: ``LayerNormalization`` (opset 17+), or its opset-14 decomposition whose ``Mul`` and
  ``Add`` hold the weight and bias.

Quantized weights are dequantized exactly as ONNX Runtime defines them: ``(q - zero_point) * scale``
(operator docs of MatMulInteger, DequantizeLinear and contrib MatMulNBits). Anything else (a fused
``Attention`` or ``SkipLayerNormalization`` from an optimizer pass, an op outside the exports' vocabulary,
a weight no pattern claims, node names without module paths) raises :class:`OnnxImportError` naming
the node. The ``onnx`` package (extra ``npformer[onnx]``) reads the file; no code runs from it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from npformer.architectures import architecture
from npformer.config import Config
from npformer.extras import require_extra
from npformer.files import BESIDE_WEIGHTS, write_checkpoint
from npformer.hub import ONNX_FILES, cache_dir
from npformer.kernels.numpy_ops import ACTIVATIONS
from npformer.models.embeddings import WORD_EMBEDDINGS
from npformer.onnx_quantized import dequantize, integer_weight, nbits_weight
from npformer.version import __version__

# Ops an unoptimized export (opset 11-18, float32 or quantized) is made of: shape plumbing,
# the attention and activation arithmetic, and the weight patterns above.
PLAIN_OPS = frozenset(
    """Abs Add And Cast Concat Constant ConstantOfShape CumSum Div Equal Erf Expand Gather Gelu Gemm Greater
    GreaterOrEqual Identity LayerNormalization Less LessOrEqual Log MatMul Max Min Mul Neg Not Or Pow Range ReduceMean Relu
    Reshape Shape Slice Softmax Split Sqrt Squeeze Sub Tanh Tile Transpose Trilu Unsqueeze Where DynamicQuantizeLinear
    MatMulInteger DequantizeLinear MatMulNBits""".split()
)
LINEAR_OPS = ("MatMul", "Gemm", "MatMulInteger", "MatMulNBits")
NORM_NAMES = ("LayerNorm", "layer_norm")  # the last part of every layer norm module's name in both models
# The FFN's activation op -> its config name (kernels.numpy_ops.ACTIVATIONS); ONNX Gelu (opset 20) has ``approximate``
ACTIVATION_OPS = {"Erf": "erf", "Tanh": "tanh", "Relu": "relu"}
FFN_MODULES = (".intermediate", ".ffn")


class OnnxImportError(ValueError):
    """An ONNX file npformer cannot turn into a checkpoint; the message names the file and node."""


class Graph:
    """An ONNX graph indexed for pattern matching: producers, consumers, initializers as NumPy."""

    def __init__(self, model, file: Path):
        self.file = file
        self.nodes = list(model.graph.node)
        self.init = {t.name: t for t in model.graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        self._to_array = importlib.import_module("onnx.numpy_helper").to_array
        self._attribute_value = importlib.import_module("onnx.helper").get_attribute_value
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.nodes:
            for name in n.input:
                self.consumers[name].append(n)
        self.claimed: set[str] = set()

    def fail(self, node, problem: str) -> OnnxImportError:
        return OnnxImportError(f"{self.file}: node {node.name or '(unnamed)'} ({node.op_type}): {problem}")

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a ``Constant`` node's output, else None; marks initializers used."""
        if name in self.init:
            self.claimed.add(name)
            try:  # data that does not make the dims is refused by name, never read past
                if name not in self._arrays:
                    self._arrays[name] = self._to_array(self.init[name])
            except Exception as e:  # noqa: BLE001 - onnx raises ValueError, TypeError... for bad data
                raise OnnxImportError(
                    f"{self.file}: initializer {name!r} (dims {list(self.init[name].dims)}) cannot "
                    f"be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
            return self._arrays[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return self._to_array(next(a.t for a in node.attribute if a.name == "value"))
        return None

    def attr(self, node, name: str, default=None):
        return next((self._attribute_value(a) for a in node.attribute if a.name == name), default)

    def only_consumer(self, name: str, op_type: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    @staticmethod
    def module_path(node) -> str | None:
        """The Transformers module a node belongs to, or None: from its name (TorchScript exporter,
        Optimum: ``/bert/encoder/layer.0/attention/self/query/MatMul`` -> ``bert.encoder.layer.0.attention.self.query``),
        else from the ``pkg.torch.onnx.name_scopes`` metadata of torch's dynamo exporter (the scope
        before the op's own)."""
        if node.name.startswith("/") and node.name.strip("/").count("/"):
            return node.name.rsplit("/", 1)[0].strip("/").replace("/", ".")
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = ast.literal_eval(prop.value)  # a list of str; literal_eval runs no code
                except (ValueError, SyntaxError):
                    return None
                if isinstance(scopes, list) and len(scopes) >= 2 and isinstance(scopes[-2], str) and scopes[-2]:
                    return scopes[-2]
        return None

    def module(self, node) -> str:
        """:meth:`module_path`, or an :class:`OnnxImportError` naming the node when it has none."""
        path = self.module_path(node)
        if not path:
            raise self.fail(
                node,
                "neither its name nor its metadata carries a module path, so its weight cannot "
                "be placed; export with torch.onnx.export or Optimum, which keep module names",
            )
        return path


def _linear(g: Graph, node) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """(weight ``(out, in)`` float32, bias or None, output name) for a Linear node with constant weights."""
    if node.op_type == "MatMul":
        b = g.constant(node.input[1])
        source = g.producer.get(node.input[1])
        if b is None and source is not None and source.op_type == "Transpose" and list(g.attr(source, "perm", [])) == [1, 0]:
            tied = g.constant(source.input[0])  # the dynamo exporter's tied decoder: Transpose(word embeddings)
            b = None if tied is None else tied.T
        return None if b is None else (np.ascontiguousarray(b.T, dtype=np.float32), None, node.output[0])
    if node.op_type == "Gemm":
        b = g.constant(node.input[1])
        if b is None:
            return None
        if g.attr(node, "transA", 0) or g.attr(node, "alpha", 1.0) != 1.0 or g.attr(node, "beta", 1.0) != 1.0:
            raise g.fail(node, "a Gemm with transA, alpha or beta is not a Linear layer")
        c = g.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        w = b if g.attr(node, "transB", 0) else b.T
        return np.ascontiguousarray(w, dtype=np.float32), c, node.output[0]
    if node.op_type == "MatMulInteger":
        w, out = integer_weight(g, node)
        return w, None, out
    bias = g.constant(node.input[5]) if len(node.input) > 5 and node.input[5] else None
    return nbits_weight(g, node), bias, node.output[0]


def _bias_after(g: Graph, node, out: str, n_out: int) -> np.ndarray:
    add = g.only_consumer(out, "Add")
    bias = None if add is None else next((c for c in map(g.constant, add.input) if c is not None), None)
    if bias is None or bias.shape != (n_out,):
        raise g.fail(node, f"expected an Add of a ({n_out},) bias after it, as every BERT Linear layer has")
    return bias.astype(np.float32)


def _table(g: Graph, node) -> np.ndarray | None:
    """A ``Gather``'s embedding table in float32: constant, or dequantized before / after the Gather."""
    data = g.constant(node.input[0])
    if data is not None and data.dtype == np.float32:
        return data
    source = g.producer.get(node.input[0])
    if data is None and source is not None and source.op_type == "DequantizeLinear":
        dq, q = source, g.constant(source.input[0])
    elif data is not None and (after := g.only_consumer(node.output[0], "DequantizeLinear")) is not None:
        dq, q = after, data
    else:
        return None if data is None or data.dtype.kind != "f" else data.astype(np.float32)
    scale, zp = g.constant(dq.input[1]), g.constant(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if q is None or scale is None:
        raise g.fail(dq, "its quantized table or scale is not an initializer")
    if scale.size > 1 and source is not dq:
        raise g.fail(dq, "a per-axis scale applied after the Gather is not a plain embedding table")
    return dequantize(q, scale, zp, axis=g.attr(dq, "axis", 1) if scale.size > 1 else None)


def _place(tensors: dict, module: str, field: str, value: np.ndarray) -> None:
    """Store ``module.field``; a module that runs twice (ALBERT's shared block) is exported a second
    time as ``name_1`` with the same constants: that copy is the same tensor, kept once."""
    repeat = re.fullmatch(r"(.+)_\d+", module)
    if repeat is not None:
        first = tensors.get(f"{repeat[1]}.{field}")
        if first is not None and np.array_equal(first, value):
            return
    tensors[f"{module}.{field}"] = value


def _layer_norms(g: Graph, tensors: dict, eps_found: list) -> None:
    for node in g.nodes:
        if node.op_type == "LayerNormalization":
            module = g.module(node)
            scale, bias = g.constant(node.input[1]), g.constant(node.input[2]) if len(node.input) > 2 else None
            if scale is None or bias is None or g.attr(node, "axis", -1) != -1:
                raise g.fail(node, "expected a layer norm over the last axis with constant weight and bias")
            _place(tensors, module, "weight", scale)
            _place(tensors, module, "bias", bias)
            eps_found.append((node, g.attr(node, "epsilon", 1e-5)))
        elif node.op_type in ("Mul", "Add") and (g.module_path(node) or "").endswith(NORM_NAMES):
            module = g.module(node)
            consts = [c for c in map(g.constant, node.input) if c is not None]
            if len(consts) != 1:
                continue
            if consts[0].ndim == 1 and consts[0].size > 1:
                _place(tensors, module, "weight" if node.op_type == "Mul" else "bias", consts[0])
            elif node.op_type == "Add" and consts[0].size == 1:  # variance + eps in the decomposition
                eps_found.append((node, float(consts[0].reshape(-1)[0])))


def read_onnx(
    file: str | Path, hidden_act: str | None = None, layer_norm_eps: float | None = None
) -> tuple[dict[str, np.ndarray], str]:
    """Read an ONNX export into ``{Transformers tensor name: float32 array}`` and a one-line description
    of what it was (``"float32"``, ``"int8 (quantize_dynamic: MatMulInteger)"``,
    ``"MatMulNBits (block 32, 4 bits)"``).

    Linear weights come out as ``(out_features, in_features)``, tables as ``(rows, hidden_size)``.
    With ``hidden_act`` / ``layer_norm_eps`` (from the config that goes with the file) the graph's
    activation op and every layer norm's epsilon are checked against them.

    Raises :class:`OnnxImportError` (a ``ValueError``) naming the file and node for anything not
    recognised, ``ImportError`` without the ``onnx`` extra, ``FileNotFoundError`` without the file.
    """
    require_extra("onnx", "onnx")
    onnx = importlib.import_module("onnx")
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"no ONNX file at {file}")
    try:
        model = onnx.load(str(file))
    except Exception as e:  # a truncated or non-ONNX file: protobuf's DecodeError and friends
        raise OnnxImportError(f"{file}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    g = Graph(model, file)
    for node in g.nodes:
        if (
            node.op_type not in PLAIN_OPS
            or node.domain not in ("", "ai.onnx", "com.microsoft")
            or (node.domain == "com.microsoft" and node.op_type != "MatMulNBits")
        ):
            raise g.fail(
                node,
                f"op {node.domain + '.' if node.domain else ''}{node.op_type} is not part of a plain "
                f"BERT export (fused by an optimizer pass?); convert the export before optimization",
            )
    tensors: dict[str, np.ndarray] = {}
    kinds, nbits = set(), set()
    for node in g.nodes:
        if node.op_type in LINEAR_OPS:
            found = _linear(g, node)
            if found is None:
                continue  # attention's activation x activation products
            w, bias, out = found
            if bias is None:
                bias = _bias_after(g, node, out, w.shape[0])
            module = g.module(node)
            if w.ndim != 2 or f"{module}.weight" in tensors:
                raise g.fail(node, f"a second or non-2-D weight {tuple(w.shape)} for module {module}")
            tensors[f"{module}.weight"], tensors[f"{module}.bias"] = w, bias
            kinds.add(node.op_type)
            if node.op_type == "MatMulNBits":
                nbits.add(f"block {g.attr(node, 'block_size')}, {g.attr(node, 'bits')} bits")
        elif node.op_type == "Gather":
            table = _table(g, node)
            if table is not None and table.ndim == 2:
                name = f"{g.module(node)}.weight"
                if name in tensors:
                    raise g.fail(node, f"a second table {name}")
                tensors[name] = table
    eps_found: list = []
    _layer_norms(g, tensors, eps_found)
    _check_rest(g, hidden_act, layer_norm_eps, eps_found)
    for name, value in tensors.items():
        if not np.all(np.isfinite(value)):
            raise OnnxImportError(f"{file}: tensor {name} has non-finite values")
    description = (
        "int8 (quantize_dynamic: MatMulInteger)"
        if "MatMulInteger" in kinds
        else f"MatMulNBits ({'; '.join(sorted(nbits))})"
        if nbits
        else "float32"
    )
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, description


def _activation_form(g: Graph, node) -> str | None:
    """The activation a node computes, in :data:`~npformer.kernels.numpy_ops.ACTIVATIONS`' terms, or None."""
    if node.op_type == "Gelu":
        return "tanh" if g.attr(node, "approximate", "none") == "tanh" else "erf"
    return ACTIVATION_OPS.get(node.op_type)


def _check_rest(g: Graph, hidden_act: str | None, layer_norm_eps: float | None, eps_found: list) -> None:
    """Every weight-sized initializer is claimed by a pattern; activation and epsilons match the config."""
    for node in g.nodes:
        for name in node.input:
            if name in g.init and name not in g.claimed:
                value = g.constant(name)
                if value.dtype.kind == "f" and value.size > 1 or value.dtype in (np.int8, np.uint8):
                    raise g.fail(
                        node,
                        f"uses the weight {name} {tuple(value.shape)} in a way npformer does not "
                        f"recognise; refusing rather than dropping it",
                    )
    if hidden_act is not None and hidden_act in ACTIVATIONS:
        used = {
            form
            for n in g.nodes
            if (form := _activation_form(g, n)) and any(part in (g.module_path(n) or "") for part in FFN_MODULES)
        }
        if used and ACTIVATIONS[hidden_act] not in used:
            raise OnnxImportError(
                f"{g.file}: the feed-forward layers compute {'/'.join(sorted(used))} but the config "
                f"says hidden_act {hidden_act!r}; the config does not belong to this export"
            )
    if layer_norm_eps is not None:
        for node, eps in eps_found:
            if not np.isclose(np.float32(eps), np.float32(layer_norm_eps), rtol=1e-5, atol=0):
                raise g.fail(node, f"layer norm epsilon {eps:g} differs from the config's layer_norm_eps {layer_norm_eps:g}")


def find_onnx(directory: Path) -> Path | None:
    """The ONNX export to convert in a checkpoint directory (``onnx/`` or top level), by
    :data:`~npformer.hub.ONNX_FILES` order; a lone ``*.onnx`` of another name; else None."""
    for folder in (directory / "onnx", directory):
        for name in ONNX_FILES:
            if (folder / name).is_file():
                return folder / name
    found = sorted(directory.glob("*.onnx")) + sorted(directory.glob("onnx/*.onnx"))
    return found[0] if len(found) == 1 else None


def convert_onnx(src: str | Path, out_dir: str | Path) -> Path:
    """Convert an ONNX export (a ``.onnx`` file, or a directory holding one; see :func:`find_onnx`)
    into a safetensors checkpoint in ``out_dir`` with Transformers' tensor names, beside the
    config.json and tokenizer files of the export's directory (or its parent, for ``onnx/``).
    Quantized weights are dequantized to float32 exactly; a decoder tied to the word embeddings is
    stored once. The metadata names the source file and its kind (``converted_from``).

    Raises ``FileNotFoundError`` (no export, no config.json beside it), :class:`OnnxImportError`
    for a graph npformer does not recognise or one that contradicts its config, ``ImportError``
    without the ``onnx`` extra.
    """
    src = Path(src)
    file = src if src.is_file() else find_onnx(src)
    if file is None:
        raise FileNotFoundError(f"no ONNX export ({', '.join(ONNX_FILES)}) in {src} or {src / 'onnx'}")
    home = _home(file)
    if home is None:
        raise FileNotFoundError(
            f"no config.json beside {file} or in its parent directory; an ONNX export needs "
            f"the model's config.json (and tokenizer files) to become a checkpoint"
        )
    config = Config.from_pretrained(home)
    tensors, kind = read_onnx(file, config.hidden_act, config.layer_norm_eps)
    arch = architecture(config.model_type)
    decoder, table = f"{arch.mlm_names[2]}.weight", f"{arch.prefix}{WORD_EMBEDDINGS}"
    if decoder in tensors and table in tensors and np.array_equal(tensors[decoder], tensors[table]):
        del tensors[decoder]
    metadata = {"format": "pt", "converted_from": f"{file.relative_to(home)} ({kind})", "npformer_version": __version__}
    return write_checkpoint(tensors, metadata, home, Path(out_dir))


def _home(file: Path) -> Path | None:
    """The directory holding the export's config.json: the export's own, or its parent (``onnx/``)."""
    return next((d for d in (file.parent, file.parent.parent) if (d / "config.json").is_file()), None)


def onnx_checkpoint(directory: Path) -> Path:
    """For a checkpoint directory that has an ONNX export and no safetensors: its conversion in
    npformer's cache (``<cache>/onnx/<key>``), made on first use (written under a temporary name and
    renamed, so an interrupted conversion is never used). The key hashes the path, size and
    modification time of the export, its external weights and the files that travel with it, so
    an edit to any of them makes a new conversion without reading the export on every load.
    Raises as :func:`convert_onnx`."""
    file = find_onnx(directory)
    if file is None:
        raise FileNotFoundError(f"no ONNX export in {directory}")
    home = _home(file) or file.parent
    parts = [file] + [file.with_name(file.name + data) for data in ("_data", ".data")]  # with external weights
    parts += [home / name for name in BESIDE_WEIGHTS]
    stamps = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in parts if p.is_file()]
    target = cache_dir() / "onnx" / hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:32]
    if (target / "model.safetensors").is_file():
        return target
    temp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        convert_onnx(file, temp)
        os.replace(temp, target)
    except OSError:
        if not (target / "model.safetensors").is_file():  # not another process's finished conversion
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target
