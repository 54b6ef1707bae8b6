"""Reading configs: YAML files and ``key=value`` overrides, validated into a :class:`RunConfig`.

Every error names the full key path (``algorithm.inner_lrr``), the file, or the value.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from distmeta import plugins
from distmeta.config.run import RunConfig
from distmeta.errors import ConfigError, bounded


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's numbers: PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a
    string; here it is the float it looks like, in files and overrides alike."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$""", re.X), list("-+0123456789."))


MAX_VALUES = 100_000
"""The most values a config may hold once its YAML aliases are expanded."""


def _expanded(value: Any, budget: int) -> int:
    """How many values ``value`` holds with aliases expanded, counting down from ``budget``
    (negative: too many; a billion-laughs document stops here at once)."""
    budget -= 1
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return budget
    for item in items:
        budget = _expanded(item, budget)
        if budget < 0:
            return budget
    return budget


def parse_yaml(text: str, where: str = "config") -> Any:
    """Parse YAML text the way every config, override and run directory is read; a document
    whose aliases expand to more than :data:`MAX_VALUES` values is refused."""
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    if _expanded(data, MAX_VALUES) < 0:
        raise ConfigError(f"{where}: holds more than {MAX_VALUES} values once its YAML aliases are expanded")
    return data


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(msg if path and msg.startswith(path.split(".")[0] + ".") or not path else f"{path}: {msg}")
    return bounded("; ".join(bounded(line, 500) for line in lines))


def validate(data: dict[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from nested sections; a :class:`ConfigError` naming every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``algorithm.inner_lr=0.1`` -> (['algorithm', 'inner_lr'], 0.1); values are YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. algorithm.inner_lr=0.1")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = parse_yaml(raw, f"override {key}") if raw else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with each ``key=value`` set (sections are created as needed)."""
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(path[:i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's sections; a missing file or bad YAML is a :class:`ConfigError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = parse_yaml(p.read_text(), f"config file {str(p)!r}") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load ``path`` (or the defaults), apply ``key=value`` overrides, validate. The config
    file's folder is importable, so a ``mypkg/`` beside it can be named by import path."""
    data = read_yaml(path) if path is not None else {}
    if path is not None:
        plugins.search_paths(Path(path).resolve().parent)
    return validate(apply_overrides(data, overrides or []))


def flat_keys(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"outer": {"lr": 0.1}}`` -> ``{"outer.lr": 0.1}``: every key path of a config."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flat_keys(value, path + ".")
        else:
            out[path] = value
    return out


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The key paths whose values differ between two configs (present in one only counts)."""
    fa, fb = flat_keys(a), flat_keys(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, ...) != fb.get(k, ...))
