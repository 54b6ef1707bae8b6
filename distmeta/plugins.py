"""Names a config gives (a model, a task family, a rule) and the classes they build.

The config names a class; it does not import it. Each kind has a registry in the room that
owns it (``distmeta.models.MODELS``, ``distmeta.algorithms.ALGORITHMS``,
``distmeta.tasks.TASKS``), imported on first use, so validating a config builds only what it
names and no layer below the rooms imports them.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

Kind = Literal["model", "algorithm", "task"]

REGISTRIES: dict[str, str] = {
    "model": "distmeta.models:MODELS",
    "algorithm": "distmeta.algorithms.registry:ALGORITHMS",
    "task": "distmeta.tasks.registry:TASKS",
}
KEYS: dict[str, str] = {"model": "model.name", "algorithm": "algorithm.name", "task": "task.family"}


def load(path: str) -> Any:
    """The object at ``package.module:attr``."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def registry(kind: Kind) -> dict[str, Any]:
    """Built-in names of ``kind`` -> their classes (or factories)."""
    return load(REGISTRIES[kind])


def names(kind: Kind) -> list[str]:
    return sorted(registry(kind))


def resolve(kind: Kind, name: str) -> Any:
    """The class (or factory) ``name`` stands for; an unknown name is a ValueError naming the
    config key and the valid names."""
    found = registry(kind).get(name)
    if found is None:
        raise ValueError(f"{KEYS[kind]}={name!r}: expected one of {names(kind)}")
    return found
