"""The one task registry: a task is one record (:class:`Task`) that ``npformer.pipeline``, the CLI,
``npformer serve`` and the explain page read, as Transformers' ``SUPPORTED_TASKS`` is.

A record names the task's pipeline class and model loader, its default model, its other names, the
``architectures`` suffix or sentence-transformers modules that make a checkpoint serve it, what it
outputs, the parameters the Inference API's
``POST /models/{name}`` accepts (name -> kind: ``bool``, ``int``, ``positive_int``, ``number``,
``str``, ``str_list``, ``str_or_list``), the call that warms a served model up, and what the explain
page shows of its prediction (:mod:`npformer.pipelines.explain_views`). The CLI's commands are
records of their own (:mod:`npformer.commands`), each naming the task it runs.

Tasks outside npformer register the same way, from an installed package's entry point in the group
``npformer.tasks``, imported the first time a task name is not found (and by the CLI when a command
is not one of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pathlib import Path

from npformer.pipelines.explain_views import ExplainView
from npformer.config import Config
from npformer.files import read_json
from npformer.plugins import load_plugins

ENTRY_POINT_GROUP = "npformer.tasks"
PARAMETER_KINDS = ("bool", "int", "positive_int", "number", "str", "str_list", "str_or_list")


def _warm_up(pipe) -> None:
    pipe("The server warms up.")


@dataclass(frozen=True)
class Task:
    """One task (see the module docstring). ``warm_up(pipe)`` answers one short request, so that a
    served model compiles its kernels before the port opens."""

    name: str
    pipeline: type
    loader: type
    default_model: str
    aliases: tuple[str, ...] = ()
    head_suffix: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    warm_up: Callable = _warm_up
    explain: ExplainView | None = None  # what the explain page shows (None: not shown)
    output: str = ""  # what one input gives, in words (``npformer info`` and ``/info`` say it)
    # sentence-transformers module types (modules.json) that make a checkpoint serve this task
    modules: tuple[str, ...] = ()
    # (checkpoint directory or loaded model) -> (pipeline class, loader) that run it instead, or None
    # (zero-shot classification: by NLI on an NLI classifier, by similarity on an embedding model)
    variant: Callable | None = None

    def __post_init__(self):
        bad = {k: v for k, v in self.parameters.items() if v not in PARAMETER_KINDS}
        if bad:
            raise ValueError(f"task {self.name!r}: unknown parameter kinds {bad}; use {PARAMETER_KINDS}")


TASKS: dict[str, Task] = {}
ALIASES: dict[str, str] = {}  # other name -> task name


def register_task(task: Task) -> Task:
    """Add ``task`` (and its aliases). Raises ``ValueError`` when a name is taken by another task."""
    for name in (task.name, *task.aliases):
        held = TASKS.get(name) or TASKS.get(ALIASES.get(name, ""))
        if held is not None and held.name != task.name:
            raise ValueError(f"the task name {name!r} is taken by {held.name!r}")
    TASKS[task.name] = task
    ALIASES.update({alias: task.name for alias in task.aliases})
    return task


def load_task_plugins() -> None:
    """Import each installed ``npformer.tasks`` entry point not imported yet."""
    load_plugins(ENTRY_POINT_GROUP)


def get_task(name) -> Task:
    """The task named ``name`` or one of its aliases. Raises ``ValueError`` listing every name."""
    key = ALIASES.get(name, name) if isinstance(name, str) else None
    if key is not None and key not in TASKS:
        load_task_plugins()
        key = ALIASES.get(name, name)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; use one of {sorted(set(TASKS) | set(ALIASES))}")
    return TASKS[key]


def task_for_architecture(architectures: list[str]) -> Task | None:
    """The task whose ``head_suffix`` ends the first matching entry of ``architectures``, else None."""
    for name in architectures:
        for task in TASKS.values():
            if task.head_suffix and name.endswith(task.head_suffix):
                return task
    return None


def task_for_checkpoint(directory: Path) -> Task:
    """The task a checkpoint serves when none is named: the task whose ``modules`` holds one of
    its sentence-transformers modules (``modules.json``, a ``Router``'s ``router_config.json``),
    else ``sentence-embeddings`` for other sentence-transformers models, else the task whose ``head_suffix`` ends an entry of
    ``config.json``'s ``architectures``, else ``sentence-embeddings`` (a bare encoder)."""
    modules_file = Path(directory) / "modules.json"
    if modules_file.is_file():
        modules = read_json(modules_file)
        types = {m.get("type") for m in modules if isinstance(m, dict)} if isinstance(modules, list) else set()
        router = Path(directory) / "router_config.json"  # a Router's routes name their modules' classes
        if router.is_file() and isinstance(read_json(router), dict):
            routed = read_json(router).get("types") or {}
            types |= {str(t).rsplit(".", 1)[0] for t in (routed.values() if isinstance(routed, dict) else ())}
        return next((t for t in TASKS.values() if types & set(t.modules)), TASKS["sentence-embeddings"])
    return task_for_architecture(Config.from_pretrained(directory).architectures) or TASKS["sentence-embeddings"]
