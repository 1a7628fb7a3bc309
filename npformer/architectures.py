"""The one ``model_type`` registry: which encoder class runs a checkpoint.

An architecture is one module (``npformer/models/bert.py``, ``distilbert.py``): an
:class:`~npformer.models.encoder.Encoder` subclass that names its ``model_type``, the prefix its
task checkpoints nest the encoder under (``bert.``), how its ``config.json`` is read
(``config_names``, ``config_fields``), its checkpoint keys, its block and its head names, and
registers itself with :func:`register`. Everything that depends on the architecture
(:class:`~npformer.config.Config`, ``AutoModel`` and the heads, adapters, ``convert`` /
``quantize``, ``trace``, ``info``) asks this registry, so adding an architecture touches no other
file (the pattern of TEI's ``backends/candle/src/models`` and Transformers' auto classes).

Architectures outside npformer register the same way, from an installed package's entry point in
the group ``npformer.architectures`` (its module is imported the first time a ``model_type`` is not
found here), so that a plugin reaches every process: the CLI, ``serve``, ``batch`` workers.
Nothing is ever imported because a checkpoint names it: a ``model_type`` that no registered or
installed architecture claims is refused by name.
"""

from __future__ import annotations

from npformer.plugins import load_plugins

ENTRY_POINT_GROUP = "npformer.architectures"
ARCHITECTURES: dict[str, type] = {}  # model_type -> Encoder subclass
SUPPORTED_MODELS_URL = "https://github.com/npformer/npformer#supported-models"


def register(encoder_class: type) -> type:
    """Register an :class:`~npformer.models.encoder.Encoder` subclass under its ``model_type``
    (usable as a class decorator). Raises ``ValueError`` when another class holds that name."""
    model_type = encoder_class.model_type
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"{encoder_class.__name__} names no model_type")
    held = ARCHITECTURES.get(model_type)
    if held is not None and held is not encoder_class:
        raise ValueError(f"model_type {model_type!r} is already registered by {held.__module__}.{held.__name__}")
    ARCHITECTURES[model_type] = encoder_class
    return encoder_class


def architecture(model_type, source: str = "config.json") -> type:
    """The encoder class registered for ``model_type`` (installed plugins are loaded on the first
    miss). Raises ``ValueError``, one line naming ``source`` and the registered types, otherwise."""
    if isinstance(model_type, str) and model_type not in ARCHITECTURES:
        load_plugins(ENTRY_POINT_GROUP)
    found = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if found is None:
        names = ", ".join(
            f"{k} ({v.description})" if getattr(v, "description", "") else k for k, v in sorted(ARCHITECTURES.items())
        )
        raise ValueError(
            f"{source}: unknown model_type {model_type!r}: npformer supports {names} (the table: {SUPPORTED_MODELS_URL})"
        )
    return found


def prefixes() -> tuple[str, ...]:
    """Every registered architecture's task-checkpoint prefix (``bert.``, ``distilbert.``...)."""
    return tuple(dict.fromkeys(cls.prefix for cls in ARCHITECTURES.values() if cls.prefix))
