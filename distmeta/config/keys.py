"""Every config key with its type, default and description, generated from the pydantic
models and the registries of rules, models and task families: what ``distmeta config
--help`` prints and what ``docs/config.md`` holds (``python -m distmeta.config.keys``
writes it; a test fails when the page is stale)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from distmeta import plugins
from distmeta.config.named import (
    IMAGE_KEY_HELP,
    IMAGE_KEYS,
    MD_FAMILY,
    MD_KEY_HELP,
    MD_KEYS,
    OMNIGLOT_KEYS,
)
from distmeta.config.run import RunConfig

DOCS_PAGE = "docs/config.md"
NAMED = {"task": ("family", "task"), "model": ("name", "model"), "algorithm": ("name", "algorithm")}


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or re.sub(r"\b(typing|collections\.abc)\.", "", str(annotation))


def class_keys(target: Any, skip: tuple[str, ...] = ("min_inner_steps",)) -> list[str]:
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


def choices(section: str, installed: bool = False) -> dict[str, list[str]]:
    """Each class a named section may choose, with the keys it takes: the built-ins, and with
    ``installed`` those that installed packages register (entry points)."""
    kind = NAMED[section][1]
    out = {name: class_keys(cls) for name, cls in plugins.registry(kind).items()}  # type: ignore[arg-type]
    for name in (plugins.names(kind) if installed else []):  # type: ignore[arg-type]
        if name not in out:
            out[name] = _keys_of(kind, name)
    if section == "task":
        out |= {"omniglot": sorted(OMNIGLOT_KEYS), "images": sorted(IMAGE_KEYS), MD_FAMILY: sorted(MD_KEYS)}
    return out


def _keys_of(kind: str, name: str) -> list[str]:
    try:
        target = plugins.resolve(kind, name)  # type: ignore[arg-type]
    except ValueError as exc:
        return [f"(does not load: {exc})"]
    return class_keys(target) if plugins.is_factory(target) else ["(an object: no keys)"]


def named_in(data: dict[str, Any]) -> list[str]:
    """The classes a config names by import path (or a plugin's name), with their keys."""
    lines = []
    for section, (key, kind) in NAMED.items():
        name = (data.get(section) or {}).get(key)
        if isinstance(name, str) and (plugins.is_path(name) or name not in plugins.registry(kind)):  # type: ignore[arg-type]
            if section == "task" and name in ("omniglot", "images"):
                continue
            lines.append(f"    {section}.{key}: {name}: {', '.join(_keys_of(kind, name))}")
    return lines


def image_keys() -> list[tuple[str, str]]:
    """The image families' keys with their meaning."""
    return [(key, IMAGE_KEY_HELP[key]) for key in IMAGE_KEY_HELP] + list(MD_KEY_HELP.items())


def fields() -> Iterator[tuple[str, str | None, list[tuple[str, str, Any, str]]]]:
    """Per section: its name, its summary, and its keys as ``(key, type, default, description)``."""
    top = [(n, _type_name(f.annotation), f.default, f.description or "")
           for n, f in RunConfig.model_fields.items()
           if not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))]
    yield "", None, top
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            doc = " ".join((section.__doc__ or "").split()).replace("``", "")
            yield name, doc, [(k, _type_name(f.annotation), f.default, f.description or "")
                              for k, f in section.model_fields.items()]


def describe(data: dict[str, Any] | None = None) -> str:
    """Every section and key with its type, default and description; with a config's
    ``data``, the keys of the user's own classes it names come first."""
    lines = ["config keys (a YAML file's sections; override any with section.key=value):"]
    own = named_in(data or {})
    if own:
        lines += ["  the classes this config names, and their keys:", *own]
    for section, doc, keys in fields():
        indent = "    " if section else "  "
        if section:
            lines.append(f"  {section}:  {doc}")
        for key, kind, default, text in keys:
            path = f"{section}.{key}" if section else key
            lines.append(f"{indent}{path}: {kind} = {default!r}" + (f"  {text}" if text else ""))
        if section in NAMED:
            lines.append(f"    other {section}.* keys are the arguments of the chosen class:")
            lines += [f"      {NAMED[section][0]}: {name}: {', '.join(keys)}"
                      for name, keys in choices(section, installed=True).items()]
            if section == "task":
                lines += [f"      task.{k}: {text}" for k, text in image_keys()]
    return "\n".join(lines)


def markdown() -> str:
    """``docs/config.md``: a table per section, then the keys each named class takes."""
    out = ["# Config keys", "",
           "Generated from the code by `python -m distmeta.config.keys` (a test fails when this page is "
           "stale). A config is a YAML file of these sections; any key can be overridden on the command "
           "line as `section.key=value` (values are YAML); `distmeta config configs/sinusoid_maml.yaml outer.lr=0.01` prints the resolved config.", ""]
    for section, doc, keys in fields():
        out += [f"## {section or 'top level'}", ""] + ([doc, ""] if doc else [])
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, kind, default, text in keys:
            path = f"{section}.{key}" if section else key
            cells = [f"`{path}`", f"`{kind}`", f"`{default!r}`", text]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if section in NAMED:
            out += ["", f"The other `{section}.*` keys are the arguments of the chosen class:", ""]
            out += [f"- `{NAMED[section][0]}: {name}`: " + ", ".join(f"`{k}`" for k in keys)
                    for name, keys in choices(section).items()]
            if section == "task":
                out += ["", "The image families' keys:", ""] + [f"- `task.{k}`: {text}" for k, text in image_keys()]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else DOCS_PAGE
    with open(path, "w") as f:
        f.write(markdown())
    print(f"wrote {path}")
