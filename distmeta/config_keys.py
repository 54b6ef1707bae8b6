"""The config's sections and keys with their defaults, generated from the pydantic models and
the registries of rules, models and task families: what ``distmeta config --help`` prints."""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

from pydantic import BaseModel

from distmeta.algorithms import ALGORITHMS
from distmeta.config import IMAGE_KEYS, OMNIGLOT_KEYS, RunConfig
from distmeta.models import MODELS


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or re.sub(r"\b(typing|collections\.abc)\.", "", str(annotation))


def _class_keys(target: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """``key=default`` for a dataclass's fields (its own first, keyword-only shared ones last)
    or a function's arguments."""
    if dataclasses.is_dataclass(target):
        items = [(f.name, f.default if f.default is not dataclasses.MISSING else
                  f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
                 for f in sorted((f for f in dataclasses.fields(target) if f.init), key=lambda f: f.kw_only)]
    else:
        items = [(n, p.default if p.default is not inspect.Parameter.empty else "(required)")
                 for n, p in inspect.signature(target).parameters.items()]
    return [f"{n}={v!r}" if not isinstance(v, str) or v != "(required)" else f"{n} {v}"
            for n, v in items if n not in skip]


def _choices(section: str) -> list[str]:
    from distmeta.tasks import TASKS

    if section == "task":
        families = {name: _class_keys(cls) for name, cls in TASKS.items()} | {
            "omniglot": sorted(OMNIGLOT_KEYS), "images": sorted(IMAGE_KEYS)}
        return [f"    family: {name}: {', '.join(keys)}" for name, keys in families.items()]
    registry, key = (MODELS, "name") if section == "model" else (ALGORITHMS, "name")
    return [f"    {key}: {name}: {', '.join(_class_keys(cls, skip=('min_inner_steps',)))}"
            for name, cls in registry.items()]


def describe() -> str:
    """Every section and key with its type and default, one line each."""
    lines = ["config keys (a YAML file's sections; override any with section.key=value):"]
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            lines.append(f"  {name}: {_type_name(field.annotation)} = {field.default!r}")
            continue
        doc = " ".join((section.__doc__ or "").split()).replace("``", "").split(". ")[0].rstrip(".")
        lines.append(f"  {name}:" + (f"  {doc}" if doc and not doc.startswith("A section") else ""))
        for key, f in section.model_fields.items():
            lines.append(f"    {name}.{key}: {_type_name(f.annotation)} = {f.default!r}")
        if name in ("task", "model", "algorithm"):
            lines.append(f"    other {name}.* keys are the arguments of the chosen class:")
            lines += ["  " + line for line in _choices(name)]
    return "\n".join(lines)
