"""PEFT LoRA adapters: read ``adapter_config.json`` + ``adapter_model.safetensors`` and merge them
into a base checkpoint's float32 tensors, as PEFT's ``merge_and_unload`` does.

LoRA (Hu et al. 2022) adds a low-rank update to a Linear weight ``W (out, in)``:
``W' = W + s * B @ A`` with ``A (r, in)``, ``B (out, r)`` and ``s = lora_alpha / r``
(``lora_alpha / sqrt(r)`` with rsLoRA, Kalajdzievski 2023), ``r`` and ``lora_alpha`` per module
from ``rank_pattern`` / ``alpha_pattern``. DoRA (Liu et al. 2024) then rescales each output row:
``W'' = m * W' / ||W'||_row``. ``lora_B.bias`` (``lora_bias``) adds ``s * b`` to the bias;
``bias="all"`` / ``"lora_only"`` adapters carry trained biases, and ``modules_to_save`` whole
modules (e.g. the classifier), which replace the base's. Reference: PEFT's
``src/peft/tuners/lora/layer.py`` (``get_delta_weight``, ``merge``), ``dora.py``, ``config.py``
and ``tuners_utils.check_target_module_exists``; ``tests/test_adapters.py`` compares with
``PeftModel`` outputs.

Keys are the base model's module names as PEFT saves them, without ``base_model.model.``
(``bert.encoder.layer.0.attention.self.query``); :func:`canonical` drops the architecture's
prefix (``bert.``, ``distilbert.``) so that the same adapter fits a bare encoder checkpoint too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from npformer.architectures import prefixes
from npformer.files import read_json

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
SAVED_PREFIX = "base_model.model."


def model_prefixes() -> tuple[str, ...]:
    """The registered architectures' task-checkpoint prefixes (``bert.``, ``distilbert.``...)."""
    return prefixes()


# fields that only matter while training (initialisation, dropout, bookkeeping)
TRAINING_ONLY = {
    "lora_dropout",
    "init_lora_weights",
    "inference_mode",
    "task_type",
    "revision",
    "auto_mapping",
    "base_model_name_or_path",
    "peft_type",
    "peft_version",
    "loftq_config",
    "eva_config",
    "corda_config",
    "runtime_config",
    "megatron_config",
    "megatron_core",
    "qalora_group_size",
    "ensure_weight_tying",
}
HANDLED = {
    "r",
    "lora_alpha",
    "target_modules",
    "fan_in_fan_out",
    "bias",
    "use_rslora",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "alpha_pattern",
    "use_dora",
    "lora_bias",
    "exclude_modules",
}


def canonical(module: str) -> str:
    """A module name without PEFT's ``base_model.model.`` and the architecture prefix."""
    if module.startswith(SAVED_PREFIX):
        module = module[len(SAVED_PREFIX) :]
    for prefix in model_prefixes():
        if module.startswith(prefix):
            return module[len(prefix) :]
    return module


@dataclass
class LoraModule:
    """One adapted Linear: ``A (r, in)``, ``B (out, r)`` float32, its scaling, and optional
    ``B`` bias ``(out,)`` and DoRA magnitude ``(out,)``."""

    a: np.ndarray
    b: np.ndarray
    scaling: float
    b_bias: np.ndarray | None = None
    magnitude: np.ndarray | None = None


@dataclass
class Adapter:
    """A LoRA adapter read from ``directory``: ``modules`` (canonical module name ->
    :class:`LoraModule`) and ``tensors`` it replaces whole (canonical tensor name -> array:
    trained biases and ``modules_to_save``). ``base`` is ``base_model_name_or_path`` (or None)."""

    directory: Path
    modules: dict[str, LoraModule] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    base: str | None = None

    def touched(self) -> set[str]:
        """Canonical tensor names whose values this adapter changes."""
        out = set(self.tensors)
        for name, m in self.modules.items():
            out.add(name + ".weight")
            if m.b_bias is not None:
                out.add(name + ".bias")
        return out

    def merged(self, name: str, base: np.ndarray | None) -> np.ndarray:
        """The value of tensor ``name`` (canonical) with this adapter merged into ``base`` (the
        base checkpoint's float32 value, or None when the base lacks it)."""
        module, _, kind = name.rpartition(".")
        m = self.modules.get(module)
        if name in self.tensors:  # a trained bias or a saved module (plus lora_B's bias, with lora_bias)
            value = self.tensors[name]
            if kind == "bias" and m is not None and m.b_bias is not None:
                value = (value + np.float32(m.scaling) * m.b_bias).astype(np.float32)
            return value
        if base is None:
            raise ValueError(f"{self.directory / WEIGHTS}: the base checkpoint has no tensor {name!r} to adapt")
        if kind == "bias":
            return (base + np.float32(m.scaling) * m.b_bias).astype(np.float32)
        delta = (m.b.astype(np.float64) @ m.a.astype(np.float64)) * m.scaling
        if delta.shape != base.shape:
            raise ValueError(
                f"{self.directory / WEIGHTS}: lora_B @ lora_A of {module!r} has shape {delta.shape} but "
                f"the base weight has {base.shape}"
            )
        weight = base.astype(np.float64) + delta
        if m.magnitude is not None:  # DoRA: each output row rescaled to its learnt magnitude
            weight *= (m.magnitude.astype(np.float64) / np.linalg.norm(weight, axis=1))[:, None]
        return weight.astype(np.float32)


def is_adapter(directory: str | Path) -> bool:
    """Whether ``directory`` holds a PEFT adapter (``adapter_config.json``)."""
    return (Path(directory) / CONFIG).is_file()


def adapter_base(directory: str | Path) -> str:
    """The base checkpoint an adapter's config names (``base_model_name_or_path``). Raises
    ``ValueError`` when it names none."""
    config = read_json(Path(directory) / CONFIG)
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise ValueError(
            f"{Path(directory) / CONFIG} names no base model (base_model_name_or_path); pass the base "
            f"checkpoint as model= and this directory as adapter="
        )
    return base


def pattern_key(patterns, module: str) -> str | None:
    """The key of ``rank_pattern`` / ``alpha_pattern`` that names ``module`` (PEFT's
    ``get_pattern_key``: the pattern must match a whole dotted suffix of the module name)."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None


def read_adapter(directory: str | Path) -> Adapter:
    """Read a PEFT LoRA adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``).

    Raises ``FileNotFoundError`` when a file is missing (``adapter_model.bin`` is refused: it is a
    pickle) and ``ValueError`` naming the file and field or tensor for anything npformer does not
    merge exactly: another tuner type, an embedding-layer target, a module whose weights disagree
    with the config's ``r`` or targets, an unknown non-default field.
    """
    directory = Path(directory)
    config_file, weights_file = directory / CONFIG, directory / WEIGHTS
    if not config_file.is_file():
        raise FileNotFoundError(f"no {CONFIG} in {directory}: not a PEFT adapter directory")
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} must hold a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{config_file}: field 'peft_type' is {config.get('peft_type')!r}; npformer merges LoRA adapters only")
    _check_fields(config, config_file)
    if not weights_file.is_file():
        bin_file = directory / "adapter_model.bin"
        hint = (
            " (adapter_model.bin is a pickle, which npformer never loads: save with safe_serialization=True)"
            if bin_file.is_file()
            else ""
        )
        raise FileNotFoundError(f"no {WEIGHTS} in {directory}{hint}")
    try:
        raw = load_file(str(weights_file))
    except Exception as e:  # SafetensorError: truncated file, bad header
        raise ValueError(f"{weights_file} is not a readable safetensors file: {str(e).splitlines()[0]}") from None
    adapter = Adapter(directory, base=config.get("base_model_name_or_path"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in raw.items():
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise ValueError(f"{weights_file}: tensor {key!r} must hold finite floats")
        value = value.astype(np.float32)
        name = canonical(key)
        match = re.fullmatch(r"(.+)\.(lora_A|lora_B|lora_magnitude_vector)(?:\.[^.]+)?\.(weight|bias)", name) or re.fullmatch(
            r"(.+)\.(lora_magnitude_vector)()", name
        )
        if "lora_embedding" in name:
            raise ValueError(
                f"{weights_file}: tensor {key!r} adapts an embedding layer; npformer merges LoRA on Linear layers only"
            )
        if match:
            module, part, kind = match.groups()
            pairs.setdefault(module, {})[part + ("_bias" if kind == "bias" and part == "lora_B" else "")] = value
        else:  # a trained bias or a module of modules_to_save
            for wrapper in (".modules_to_save.default.", ".modules_to_save.", ".base_layer."):
                name = name.replace(wrapper, ".")
            adapter.tensors[name] = value
    for module, parts in pairs.items():
        adapter.modules[module] = _module(config, module, parts, weights_file)
    _check_targets(config, set(adapter.modules), config_file)
    return adapter


def _check_fields(config: dict, source: Path) -> None:
    for name, value in config.items():
        if name in HANDLED or name in TRAINING_ONLY:
            continue
        if value not in (None, False, {}, [], "", 0):
            raise ValueError(f"{source}: field {name!r} = {value!r} is not supported by npformer's LoRA merge")
    if config.get("exclude_modules"):
        raise ValueError(f"{source}: field 'exclude_modules' is not supported by npformer's LoRA merge")
    if config.get("bias", "none") not in ("none", "all", "lora_only"):
        raise ValueError(f"{source}: field 'bias' must be 'none', 'all' or 'lora_only', got {config.get('bias')!r}")
    for name in ("r", "lora_alpha"):
        value = config.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{source}: field {name!r} must be a positive number, got {value!r}")


def _module(config: dict, module: str, parts: dict, source: Path) -> LoraModule:
    if "lora_A" not in parts or "lora_B" not in parts:
        raise ValueError(f"{source}: module {module!r} needs both lora_A and lora_B weights, found {sorted(parts)}")
    a, b = parts["lora_A"], parts["lora_B"]
    key_r = pattern_key(config.get("rank_pattern") or {}, module)
    key_alpha = pattern_key(config.get("alpha_pattern") or {}, module)
    r = config["rank_pattern"][key_r] if key_r is not None else config["r"]
    alpha = config["alpha_pattern"][key_alpha] if key_alpha is not None else config["lora_alpha"]
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
        raise ValueError(
            f"{source}: module {module!r} has lora_A {a.shape} and lora_B {b.shape}, but the config gives it r = {r}"
        )
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    magnitude = parts.get("lora_magnitude_vector")
    if magnitude is not None and not config.get("use_dora"):
        raise ValueError(f"{source}: module {module!r} has a DoRA magnitude but 'use_dora' is not set")
    if config.get("use_dora") and magnitude is None:
        raise ValueError(f"{source}: 'use_dora' is set but module {module!r} has no lora_magnitude_vector")
    return LoraModule(a, b, scaling, parts.get("lora_B_bias"), magnitude)


def targeted(config: dict, module: str) -> bool:
    """Whether PEFT's config targets ``module`` (a full module name as PEFT saw it):
    ``target_modules`` as a regex (full match) or a list (exact name or dotted suffix), then
    ``layers_to_transform`` / ``layers_pattern`` for a list."""
    targets = config.get("target_modules")
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    targets = targets or []
    if module in targets:
        return True
    if not any(module.endswith("." + t) for t in targets):
        return False
    layers = config.get("layers_to_transform")
    if layers is None or layers == []:
        return True
    patterns = config.get("layers_pattern") or []
    patterns = [patterns] if isinstance(patterns, str) else patterns
    found = None
    for pattern in patterns or [None]:
        found = re.match(r".*\.[^.]*\.(\d+)\." if pattern is None else rf".*\.{pattern}\.(\d+)\.", module)
        if found:
            break
    if found is None:
        return False
    index = int(found.group(1))
    return index == layers if isinstance(layers, int) else index in layers


def _check_targets(config: dict, modules: set[str], source: Path) -> None:
    """Every module with LoRA weights must be one the config targets (else the file and the config
    disagree, and merging either way could be wrong)."""
    if config.get("target_modules") in (None, "all-linear"):
        if config.get("target_modules") == "all-linear":
            return
        raise ValueError(f"{source}: field 'target_modules' is missing")
    for module in sorted(modules):
        if not any(targeted(config, prefix + module) for prefix in ("", *model_prefixes())):
            raise ValueError(
                f"{source}: the adapter has LoRA weights for {module!r}, which 'target_modules' "
                f"{config.get('target_modules')!r} (with 'layers_to_transform') does not name"
            )


class AdapterSet:
    """The adapters loaded on one model, and the base values of every tensor any of them changes
    (float32 copies, so that switching adapters needs no re-read of the base checkpoint).

    ``base_value(name)`` reads a tensor of the base the first time it is needed.
    """

    def __init__(self, read_base):
        self.read_base = read_base  # canonical name -> float32 array, or None when the base lacks it
        self.adapters: dict[str, Adapter] = {}
        self.originals: dict[str, np.ndarray | None] = {}
        self.active: str | None = None

    def add(self, name: str, adapter: Adapter) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"an adapter name must be a non-empty str, got {name!r}")
        for tensor in adapter.touched():
            if tensor not in self.originals:
                base = self.read_base(tensor)
                self.originals[tensor] = None if base is None else np.array(base, dtype=np.float32)
        self.adapters[name] = adapter

    def values(self, name: str | None) -> dict[str, np.ndarray | None]:
        """Every touched tensor's value with adapter ``name`` merged (None: the base's values)."""
        if name is not None and name not in self.adapters:
            raise KeyError(f"no adapter named {name!r}; loaded: {sorted(self.adapters)}")
        adapter = self.adapters.get(name) if name is not None else None
        out = {}
        for tensor, base in self.originals.items():
            out[tensor] = adapter.merged(tensor, base) if adapter is not None and tensor in adapter.touched() else base
        return out


class Adaptable:
    """What a model gains from adapters: ``load_adapter``, ``set_adapter``, ``active_adapter``.
    The model implements ``replace_tensor(name, value)`` (canonical checkpoint name, float32 value),
    which stores the value as loading would have (packed, or quantized for int8 models)."""

    adapter_set: AdapterSet | None = None

    def replace_tensor(self, name: str, value: np.ndarray) -> None:  # pragma: no cover - implemented by models
        raise NotImplementedError

    def load_adapter(self, name: str, directory: str | Path, *, activate: bool = False) -> None:
        """Read the PEFT LoRA adapter in ``directory`` under ``name``; with ``activate``, switch to it.
        Raises ``ValueError`` / ``FileNotFoundError`` as :func:`read_adapter`, and when the model
        was not loaded from a float checkpoint it can read base tensors from."""
        if self.adapter_set is None:
            raise ValueError(
                "this model cannot take adapters: load it with from_pretrained(..., adapter=...) or "
                "AutoModel*.from_pretrained from a float checkpoint"
            )
        self.adapter_set.add(name, read_adapter(directory))
        if activate:
            self.set_adapter(name)

    def set_adapter(self, name: str | None) -> None:
        """Make adapter ``name`` the one merged into the weights (None: the base model alone). The
        result equals a fresh ``from_pretrained(base, adapter=...)`` of that adapter, bit for bit.
        Raises ``KeyError`` for a name not loaded."""
        if self.adapter_set is None:
            raise KeyError(f"no adapter named {name!r}; this model has none loaded")
        for tensor, value in self.adapter_set.values(name).items():
            if value is None:
                raise ValueError(
                    f"the base checkpoint has no tensor {tensor!r}, and adapter {name!r} does not give "
                    f"one: it cannot run without an adapter that does"
                )
            self.replace_tensor(tensor, value)
        self.adapter_set.active = name

    @property
    def active_adapter(self) -> str | None:
        """The name of the adapter merged into the weights (None: none)."""
        return self.adapter_set.active if self.adapter_set is not None else None
