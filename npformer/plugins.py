"""Installed packages' additions to npformer's registries, through entry points: the group
``npformer.architectures`` (:mod:`npformer.architectures`) and ``npformer.tasks``
(:mod:`npformer.pipelines.tasks`). Each entry point names a module that registers on import; it
is imported once, the first time a registry misses a name. Only installed packages are imported
this way, never a module that a checkpoint names."""

from __future__ import annotations

from importlib.metadata import entry_points

_loaded: set[tuple[str, str]] = set()  # (group, module) already imported


def load_plugins(group: str) -> None:
    """Import each installed entry point of ``group`` not imported yet."""
    for entry in entry_points(group=group):
        if (group, entry.value) not in _loaded:
            _loaded.add((group, entry.value))
            entry.load()
