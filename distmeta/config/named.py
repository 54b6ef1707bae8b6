"""The sections that name a class: ``task.family``, ``model.name``, ``algorithm.name``.

A name is a built-in, a plugin's, or an import path ``package.module:attr`` to the user's own
class (:mod:`distmeta.plugins`). The section's other keys are the named class's own
arguments, validated against its signature and type hints, so a config can only name what
exists and give it what it takes.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from distmeta import plugins
from distmeta.errors import short
from distmeta.models.base import functional_batchnorm


class Section(BaseModel):
    """A config section: unknown keys and non-finite numbers (``.inf``, ``.nan``) are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def arguments(target: Any, skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``target`` (a class or a function) takes, by name."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in inspect.signature(target).parameters.items() if n not in skip and p.kind in kinds}


def type_hints(target: Any) -> dict[str, Any]:
    """The annotated types of ``target``'s arguments (strings where they do not evaluate)."""
    if dataclasses.is_dataclass(target):
        return {f.name: f.type for f in dataclasses.fields(target)}
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # a hint that does not evaluate (a name only the module's TYPE_CHECKING sees)
        return {}


PLAIN = (int, float, bool, str, bytes, type(None), list, tuple, dict, set, frozenset)


def _checkable(hint: Any) -> bool:
    """Whether a type hint is made of plain types only (what YAML values can be checked against)."""
    origin = typing.get_origin(hint)
    if origin is None:
        return hint in PLAIN or hint is Any
    if origin is typing.Literal:
        return True
    return (origin in PLAIN or origin in (typing.Union, types.UnionType)) and all(
        _checkable(a) for a in typing.get_args(hint) if a is not Ellipsis)


def check_kwargs(section: str, target: Any, kwargs: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate ``kwargs`` against ``target``'s signature and type hints; errors name ``section.key``.
    Returns the values as their types make them (``"1e-3"`` -> ``0.001`` for a float)."""
    params = arguments(target, skip)
    for key in kwargs:
        if key not in params:
            raise ValueError(f"{section}.{key}: unknown key; valid keys: {sorted(params)}")
    hints = type_hints(target)
    out = dict(kwargs)
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is None or isinstance(hint, str):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{section}.{key}={short(value)}: must be a finite number")
        if not _checkable(hint):  # a tensor, a module ...: the class checks it itself
            continue
        try:
            coerced = TypeAdapter(hint).validate_python(value, strict=False)
        except ValidationError as exc:
            raise ValueError(f"{section}.{key}={short(value)}: {exc.errors()[0]['msg']}") from None
        if isinstance(coerced, (int, float)) and not isinstance(coerced, bool) and isinstance(value, str):
            out[key] = coerced
    return out


class OpenSection(Section):
    """A section naming a class; its other keys are that class's arguments (``kwargs``)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    _section: ClassVar[str] = ""

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def _check_and_coerce(self, target: Any, skip: tuple[str, ...] = ()) -> None:
        """Validate the class's arguments and keep their typed values (numbers as numbers).
        A key set to null that the class does not take is dropped: ``model.name=resnet12
        model.pool=null`` switches a config's model and removes its Conv4-only key."""
        known = arguments(target)
        for key in [k for k, v in self.kwargs.items() if v is None and k not in known]:
            del self.model_extra[key]  # type: ignore[union-attr]
        self.model_extra.update(check_kwargs(self._section, target, self.kwargs, skip))  # type: ignore[union-attr]

    def _no_keys(self, obj: Any) -> None:
        """A given object (not a class) takes no keys: its own fields say what it is."""
        if self.kwargs:
            raise ValueError(f"{self._section}: {type(obj).__name__} was given as an object; it takes no keys "
                             f"({sorted(self.kwargs)})")

    def _record_resolved(self, obj: Any, target: Any, skip: tuple[str, ...] = ()) -> None:
        """Write every argument's resolved value back, so the saved config is complete: a
        dataclass's fields as the object holds them, else the given keys and the defaults."""
        if dataclasses.is_dataclass(target):
            values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(target) if f.init and f.name not in skip}
        else:
            values = {n: p.default for n, p in arguments(target, skip).items()
                      if p.default is not inspect.Parameter.empty and _plain(p.default)} | self.kwargs
        self.model_extra.update({n: list(v) if isinstance(v, tuple) else v  # type: ignore[union-attr]
                                 for n, v in values.items()})


def _plain(value: Any) -> bool:
    """A default that a YAML config can hold."""
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, (list, tuple)) and all(_plain(v) for v in value))


MD_FAMILY = "meta_dataset"
IMAGE_FAMILIES = ("omniglot", "images", MD_FAMILY)
"""Task families that draw episodes from class pools on disk (class shards at ``data.path``,
the Omniglot arrays, or Meta-Dataset's variable-way variable-shot episodes from the sources
at ``data.sources``); the others are generated by code (``distmeta.tasks.TASKS``)."""
IMAGE_KEYS = {"way": int, "shot": int, "query": int, "rotations": bool, "augment": bool, "labels": str}
"""The keys of the image families (``images``: class shards at ``data.path``; ``omniglot``)."""
IMAGE_KEY_HELP = {
    "way": "classes per task (default 5)",
    "shot": "support examples per class (default 1)",
    "query": "query examples per class (default 15)",
    "rotations": "90/180/270-degree rotations of each class as new classes, meta-train only (default: "
                 "true for omniglot)",
    "augment": "random crop, flip and colour jitter of training images (default false)",
    "labels": "episode: labels 0..way-1; global: the pool's class ids, for ERM pre-training (default episode)",
    "root": "omniglot only: where the Omniglot arrays are (default $DISTMETA_OMNIGLOT, else "
            "~/.cache/distmeta/omniglot)",
    "image_size": "omniglot only: image side in pixels (default 28)",
}
OMNIGLOT_KEYS = frozenset({*IMAGE_KEYS, "root", "image_size"})
NUMBER = (int, float)
MD_KEYS: dict[str, tuple[type, ...]] = {
    "num_ways": (int, type(None)), "num_support": (int, list, type(None)), "num_query": (int, type(None)),
    "min_ways": (int,), "max_ways_upper_bound": (int,), "max_num_query": (int,), "max_support_set_size": (int,),
    "max_support_size_contrib_per_class": (int,), "min_log_weight": NUMBER, "max_log_weight": NUMBER,
    "use_hierarchy": (bool,), "ignore_hierarchy_probability": NUMBER, "min_examples_in_class": (int,)}
"""``task.family: meta_dataset``'s keys: the official sampler's ``EpisodeDescriptionConfig``
(:class:`distmeta.tasks.variable.EpisodeShape`; its defaults are the paper's)."""
MD_KEY_HELP = {
    "num_ways": "meta_dataset: fixed ways (null: uniform in [min_ways, min(max_ways_upper_bound, classes)])",
    "num_support": "meta_dataset: fixed shots per class, or [lo, hi] (null: the class-imbalanced sizes)",
    "num_query": "meta_dataset: fixed query per class (null: min(max_num_query, half the smallest class))",
    "min_ways": "meta_dataset: fewest ways (default 5)",
    "max_ways_upper_bound": "meta_dataset: most ways (default 50)",
    "max_num_query": "meta_dataset: most query examples per class (default 10)",
    "max_support_set_size": "meta_dataset: most support examples in all (default 500)",
    "max_support_size_contrib_per_class": "meta_dataset: most support examples a class adds to the size (default 100)",
    "min_log_weight": "meta_dataset: class-imbalance log-weight, low end (default log 0.5)",
    "max_log_weight": "meta_dataset: class-imbalance log-weight, high end (default log 2)",
    "use_hierarchy": "meta_dataset: ILSVRC classes under one DAG node, Omniglot's within one alphabet (default true)",
    "ignore_hierarchy_probability": "meta_dataset: share of episodes drawn ignoring the hierarchy (default 0)",
    "min_examples_in_class": "meta_dataset: leave out classes with fewer images (default 0)",
}


def families() -> list[str]:
    """Every task family by name: those generated by code, then the image families."""
    return [*plugins.names("task"), *IMAGE_FAMILIES]


class TaskConfig(OpenSection):
    """The task family and its own keys (``way``, ``shot``, ``query`` ... for image families)."""

    _section: ClassVar[str] = "task"
    family: str = Field("sinusoid", description="the task family: one generated by code (sinusoid, linear_rep, "
                        "or an import path package.module:Class), or an image family (omniglot, images: N-way "
                        "K-shot from class shards at data.path)")

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.family not in families() and not plugins.is_path(self.family) and not plugins.is_given("task", self.family):
            raise ValueError(f"task.family={self.family!r}: expected one of {families()} or an import path "
                             "package.module:Class")
        if self.family not in IMAGE_FAMILIES:
            cls = plugins.resolve("task", self.family)
            if not plugins.is_factory(cls):
                self._no_keys(cls)
                return self
            self._check_and_coerce(cls)
            try:
                family = cls(**self.kwargs)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"task ({self.family}): {exc}") from None
            self._record_resolved(family, cls)
            return self
        if self.family == MD_FAMILY:
            return self._check_md()
        valid = OMNIGLOT_KEYS if self.family == "omniglot" else frozenset(IMAGE_KEYS)
        for key, value in self.kwargs.items():
            if key not in valid:
                raise ValueError(f"task.{key}: unknown key for {self.family}; valid keys: {sorted(valid)}")
            kind = IMAGE_KEYS.get(key)
            if kind is not None and not isinstance(value, kind):
                raise ValueError(f"task.{key}={short(value)}: expected {kind.__name__}")
            if key == "labels" and value not in ("episode", "global"):
                raise ValueError(f"task.labels={short(value)}: expected 'episode' or 'global'")
        return self

    def _check_md(self) -> TaskConfig:
        for key, value in self.kwargs.items():
            if key not in MD_KEYS:
                raise ValueError(f"task.{key}: unknown key for {MD_FAMILY}; valid keys: {sorted(MD_KEYS)}")
            kinds = MD_KEYS[key]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"task.{key}={short(value)}: expected {' or '.join(k.__name__ for k in kinds)}")
        return self

    @property
    def way(self) -> int | None:
        """Classes per task of the N-way image families (5 unless given); ``None`` otherwise
        (and for Meta-Dataset's variable ways, unless ``num_ways`` fixes them)."""
        if self.family == MD_FAMILY:
            return self.kwargs.get("num_ways")
        return self.kwargs.get("way", 5) if self.family in IMAGE_FAMILIES else None


class ModelConfig(OpenSection):
    """The model (``name``) and its own keys; where its initial weights come from."""

    _section: ClassVar[str] = "model"
    name: str = Field("mlp", description="the model: mlp, conv4, resnet12, resnet18, linear_rep, linear, or an import path "
                      "package.module:factory to any torch.nn.Module (a class or a function returning one)")
    head: str = Field("head", description="the module path of the model's linear head (its parameters' name "
                      "prefix): what adapt: head (ANIL), outer.zero_head and model.init_scope: body go by")
    init: str | None = Field(None, description="start from trained weights: a run directory (its newest "
                             "checkpoint) or a .pt checkpoint file, local or on a pyarrow.fs URI")
    init_scope: Literal["body", "all"] = Field("body", description="what model.init replaces: the body's "
                                               "weights (the head stays fresh) or every parameter")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        target = plugins.resolve("model", self.name)
        if plugins.is_factory(target):
            self._check_and_coerce(target)
        else:
            self._no_keys(target)
        return self

    @property
    def head_prefix(self) -> str:
        """The name prefix of the head's parameters (``head.``)."""
        return self.head.rstrip(".") + "."

    def build(self) -> Any:
        """The model, e.g. ``conv4(n_way=5)``, carrying its head's name prefix (``head_prefix``)."""
        model = functional_batchnorm(plugins.build("model", self.name, self.kwargs), self.name)
        model.head_prefix = self.head_prefix
        return model


class AlgorithmConfig(OpenSection):
    """The rule (``name``) and its hyper-parameters."""

    _section: ClassVar[str] = "algorithm"
    name: str = Field("maml", description="the rule: maml, fomaml, imaml, reptile, metasgd, kfo, leap, r2d2, "
                      "protonet, erm, or an import path package.module:Rule (ANIL is maml with adapt: head; MAML++ "
                      "is maml with its options)")

    @model_validator(mode="after")
    def _check(self) -> AlgorithmConfig:
        cls = plugins.resolve("algorithm", self.name)
        if not plugins.is_factory(cls):
            self._no_keys(cls)
            return self
        self._check_and_coerce(cls, skip=("min_inner_steps",))
        try:
            rule = cls(**self.kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc).replace(f"algorithm({cls.__name__})", "algorithm")) from None
        self._record_resolved(rule, cls)
        return self

    def build(self) -> Any:
        """The rule object, e.g. ``MAML(inner_lr=0.01, inner_steps=1)``."""
        return plugins.build("algorithm", self.name, self.kwargs)
