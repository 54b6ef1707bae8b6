"""Names a config gives (a model, a task family, a rule, an outer optimiser, a loss) and what
they build.

Wherever a config takes a name it also takes an import path ``package.module:attr``: a
built-in is just a plugin that ships with distmeta. A name is, in this order,

1. an import path (it holds a ``:``): the object at that path; the working directory and the
   config file's directory are importable, as a script's is under ``python -m``;
2. a built-in: each kind has a registry in the room that owns it (``distmeta.models.MODELS``,
   ``distmeta.algorithms.ALGORITHMS``, ``distmeta.tasks.TASKS``, :data:`OPTIMIZERS`,
   :data:`LOSSES`), imported on first use, so no layer below the rooms imports them;
3. an entry point of an installed package, in the group ``distmeta.plugins`` and named
   ``KIND.NAME`` (``model.mynet = "mypkg.nets:MyNet"`` in its ``pyproject.toml``).

A name that does not resolve is a one-line error naming the config key, the module and the
import error. Objects handed to :func:`distmeta.fit` are *given*: registered in the process
under ``given-KIND`` (:func:`give`), sent to every actor with the config (:func:`given`,
:func:`accept`), and resolved like any other name.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any, Literal

Kind = Literal["model", "algorithm", "task", "optimizer", "loss"]

REGISTRIES: dict[str, str] = {
    "model": "distmeta.models:MODELS",
    "algorithm": "distmeta.algorithms.registry:ALGORITHMS",
    "task": "distmeta.tasks.registry:TASKS",
    "optimizer": "distmeta.plugins:OPTIMIZERS",
    "loss": "distmeta.plugins:LOSSES",
}
KEYS: dict[str, str] = {"model": "model.name", "algorithm": "algorithm.name", "task": "task.family",
                        "optimizer": "outer.optimizer", "loss": "the task family's loss"}
GROUP = "distmeta.plugins"
OPTIMIZERS = {"adam": "torch.optim:Adam", "sgd": "torch.optim:SGD"}
"""Outer optimisers by name: any ``torch.optim.Optimizer`` class also works by import path."""
LOSSES = {"mse": "distmeta.losses:mse", "cross_entropy": "distmeta.losses:cross_entropy"}
"""Task losses by name: ``f(prediction, target) -> loss`` or ``(loss, accuracy)``, per task."""


_GIVEN: dict[str, dict[str, Any]] = {}
"""kind -> name -> the object handed to :func:`distmeta.fit` in this process."""


def give(kind: Kind, obj: Any) -> str:
    """Register ``obj`` (a class, a factory or an instance) as this run's ``kind``; its name."""
    name = f"given-{kind}"
    _GIVEN.setdefault(kind, {})[name] = obj
    return name


def given() -> dict[str, dict[str, Any]]:
    """What this process was given, to hand to the actors (Ray pickles it)."""
    return {kind: dict(objects) for kind, objects in _GIVEN.items()}


def is_given(kind: Kind, name: str) -> bool:
    return name in _GIVEN.get(kind, {})


def forget() -> None:
    """Drop what this process was given (a new :func:`distmeta.fit` starts afresh)."""
    _GIVEN.clear()


def given_paths() -> list[str]:
    """Where the given objects come from, as ``module:name`` (what :func:`local_code` ships)."""
    out = []
    for objects in _GIVEN.values():
        for obj in objects.values():
            owner = obj if is_factory(obj) else type(obj)
            module = getattr(owner, "__module__", "") or ""
            if module and module != "__main__":
                out.append(f"{module}:{getattr(owner, '__qualname__', 'object')}")
    return out


def accept(objects: dict[str, dict[str, Any]] | None) -> None:
    """Register the objects a driver was given (in an actor, before it reads the config)."""
    for kind, named in (objects or {}).items():
        _GIVEN.setdefault(kind, {}).update(named)


def is_factory(target: Any) -> bool:
    """A class or a function (called with the config's keys) rather than a ready object."""
    return inspect.isclass(target) or inspect.isroutine(target) or isinstance(target, functools.partial)


def build(kind: Kind, name: str, kwargs: dict[str, Any]) -> Any:
    """What ``name`` builds with ``kwargs``: a factory is called; a given object is used as it
    is (a model: a copy of it), and takes no keys."""
    target = resolve(kind, name)
    if is_factory(target):
        return target(**kwargs)
    if kwargs:
        raise ValueError(f"{KEYS[kind]}={name!r} is an object, not a class or factory: it takes no keys "
                         f"({sorted(kwargs)})")
    return copy.deepcopy(target) if kind == "model" else target


def is_path(name: str) -> bool:
    return ":" in name


def search_paths(*extra: str | os.PathLike[str]) -> None:
    """Make the working directory (and ``extra`` folders, such as the config file's) importable."""
    for folder in (os.getcwd(), *extra):
        folder = os.path.abspath(folder)
        if folder not in sys.path:
            sys.path.insert(0, folder)


def _deref(value: Any) -> Any:
    """A registry entry given as an import path string is loaded; anything else is itself."""
    return load(value) if isinstance(value, str) and is_path(value) else value


def load(path: str, key: str | None = None) -> Any:
    """The object at ``package.module:attr`` (``attr`` may be dotted); errors name ``key``."""
    module, _, attr = path.partition(":")
    where = f"{key}={path!r}: " if key else f"{path!r}: "
    if not module or not attr:
        raise ValueError(f"{where}an import path is package.module:attr")
    search_paths()
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:  # any import failure: named, in one line
        raise ValueError(f"{where}cannot import {module} ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{where}module {module} has no attribute {attr}")
        obj = getattr(obj, part)
    return obj


@functools.cache
def _entry_points() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        kind, _, name = ep.name.partition(".")
        found.setdefault(kind, {})[name] = ep
    return found


def registry(kind: Kind) -> dict[str, Any]:
    """Built-in names of ``kind`` -> their classes (or factories)."""
    module, _, attr = REGISTRIES[kind].partition(":")
    return {name: _deref(value) for name, value in getattr(importlib.import_module(module), attr).items()}


def names(kind: Kind) -> list[str]:
    """Every name of ``kind``: built-ins, then those installed packages register."""
    module, _, attr = REGISTRIES[kind].partition(":")
    builtin = list(getattr(importlib.import_module(module), attr))
    return sorted(builtin) + sorted(set(_entry_points().get(kind, {})) - set(builtin))


def resolve(kind: Kind, name: str) -> Any:
    """The class (or factory, or function) ``name`` stands for."""
    key = KEYS[kind]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{key}={name!r}: expected a name or an import path package.module:attr")
    if is_path(name):
        return load(name, key)
    if name in _GIVEN.get(kind, {}):
        return _GIVEN[kind][name]
    if name.startswith("given-"):
        raise ValueError(f"{key}={name!r} was an object handed to distmeta.fit in the run that wrote this config; "
                         "hand it to distmeta.fit again, or name it by import path package.module:attr")
    module, _, attr = REGISTRIES[kind].partition(":")
    builtin = getattr(importlib.import_module(module), attr)
    if name in builtin:
        return _deref(builtin[name])
    ep = _entry_points().get(kind, {}).get(name)
    if ep is not None:
        try:
            return ep.load()
        except Exception as exc:
            raise ValueError(f"{key}={name!r}: the entry point {GROUP} {ep.name} = {ep.value} does not load "
                             f"({type(exc).__name__}: {exc})") from None
    raise ValueError(f"{key}={name!r}: expected one of {names(kind)} or an import path package.module:attr")


def _installed(origin: str) -> bool:
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | {sys.prefix, sys.base_prefix}
    here = Path(origin).resolve()
    return any(here.is_relative_to(Path(r).resolve()) for r in roots if r) or "site-packages" in here.parts


def local_code(paths: list[str]) -> list[str]:
    """The local folders (packages) or files (modules) that the import paths ``paths`` live in,
    leaving out what is installed (distmeta itself, site-packages): what a cluster's workers
    need shipped to them (Ray's ``py_modules``)."""
    out: list[str] = []
    for path in paths:
        top = path.partition(":")[0].split(".")[0]
        if not top or top == "distmeta":
            continue
        search_paths()
        spec = importlib.util.find_spec(top)
        if spec is None or spec.origin in ("built-in", "frozen"):
            continue
        if spec.origin is None:  # a namespace package (a folder without __init__.py): each of its folders
            places = list(spec.submodule_search_locations or [])
        else:
            places = [str(Path(spec.origin).parent) if spec.submodule_search_locations else spec.origin]
        out += [p for p in places if not _installed(p) and p not in out]
    return out


def import_roots(paths: list[str]) -> list[str]:
    """The folders that make the user's code of ``paths`` importable (each package's parent)."""
    return sorted({str(Path(where).parent) for where in local_code(paths)})
