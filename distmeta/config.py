"""The typed run config: load YAML, apply ``key=value`` overrides, validate.

Every error names the full key path (``algorithm.inner_lrr``), the file, or the value.
Sections: ``task``, ``model``, ``algorithm``, ``outer``, ``runtime``, ``data``, ``tracking``,
``checkpoint``, ``eval``. The rule, model and task family sections are validated against the
hyper-parameters of the class they build, so a config can only name what exists.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from distmeta.algorithms import ALGORITHMS
from distmeta.errors import ConfigError
from distmeta.models import MODELS
from distmeta.tasks.registry import FAMILIES, IMAGE_FAMILIES, TASKS

__all__ = ["ConfigError", "RunConfig", "load_config", "validate", "apply_overrides", "parse_yaml"]


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's numbers: PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a
    string; here it is the float it looks like, in files and overrides alike."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$""", re.X), list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """Parse YAML text the way every config, override and run directory is read."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_kwargs(section: str, target: Any, kwargs: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate ``kwargs`` against ``target``'s signature and type hints; errors name ``section.key``.
    Returns the values as their types make them (``"1e-3"`` -> ``0.001`` for a float)."""
    params = {n: p for n, p in inspect.signature(target).parameters.items() if n not in skip}
    for key in kwargs:
        if key not in params:
            raise ValueError(f"{section}.{key}: unknown key; valid keys: {sorted(params)}")
    hints = inspect.get_annotations(target, eval_str=True) if inspect.isfunction(target) else {
        n: f.type for n, f in target.__dataclass_fields__.items()}
    out = dict(kwargs)
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is None or isinstance(hint, str):
            continue
        try:
            coerced = TypeAdapter(hint).validate_python(value, strict=False)
        except ValidationError as exc:
            raise ValueError(f"{section}.{key}={value!r}: {exc.errors()[0]['msg']}") from None
        if isinstance(coerced, (int, float)) and not isinstance(coerced, bool) and isinstance(value, str):
            out[key] = coerced
    return out


class OpenSection(Section):
    """A section naming a class; its other keys are that class's arguments (``kwargs``)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def _check_and_coerce(self, target: Any, skip: tuple[str, ...] = ()) -> None:
        """Validate the class's arguments and keep their typed values (numbers as numbers).
        A key set to null that the class does not take is dropped: ``model.name=resnet12
        model.pool=null`` switches a config's model and removes its Conv4-only key."""
        known = inspect.signature(target).parameters
        for key in [k for k, v in self.kwargs.items() if v is None and k not in known]:
            del self.model_extra[key]  # type: ignore[union-attr]
        self.model_extra.update(_check_kwargs(self._section, target, self.kwargs, skip))  # type: ignore[union-attr]

    def _record_resolved(self, obj: Any, names: list[str]) -> None:
        """Write every argument's resolved value back, so the saved config is complete."""
        values = {n: getattr(obj, n) for n in names}
        self.model_extra.update({n: list(v) if isinstance(v, tuple) else v  # type: ignore[union-attr]
                                 for n, v in values.items()})


IMAGE_KEYS = {"way": int, "shot": int, "query": int, "rotations": bool, "augment": bool, "labels": str}
"""``task.family: images`` (class shards at ``data.path``): N-way K-shot (``query`` per class),
Omniglot-style ``rotations`` as new classes (meta-train only), training ``augment``ation,
``labels``: ``episode`` (0..way-1) or ``global`` (pool class ids, for ERM pre-training)."""
OMNIGLOT_KEYS = frozenset({*IMAGE_KEYS, "root", "image_size"})


class TaskConfig(OpenSection):
    """``family``: one of :data:`distmeta.tasks.FAMILIES`; the rest are the family's own keys."""

    _section: ClassVar[str] = "task"
    family: str = "sinusoid"

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.family not in FAMILIES:
            raise ValueError(f"task.family={self.family!r}: expected one of {list(FAMILIES)}")
        if self.family in TASKS:
            cls = TASKS[self.family]
            self._check_and_coerce(cls)
            self._record_resolved(cls(**self.kwargs),
                                  [f for f, spec in cls.__dataclass_fields__.items() if spec.init])
        else:
            valid = OMNIGLOT_KEYS if self.family == "omniglot" else frozenset(IMAGE_KEYS)
            for key, value in self.kwargs.items():
                if key not in valid:
                    raise ValueError(f"task.{key}: unknown key for {self.family}; valid keys: {sorted(valid)}")
                kind = IMAGE_KEYS.get(key)
                if kind is not None and not isinstance(value, kind):
                    raise ValueError(f"task.{key}={value!r}: expected {kind.__name__}")
                if key == "labels" and value not in ("episode", "global"):
                    raise ValueError(f"task.labels={value!r}: expected 'episode' or 'global'")
        return self

    @property
    def way(self) -> int | None:
        """Classes per task of the image families (5 unless given); ``None`` otherwise."""
        return self.kwargs.get("way", 5) if self.family in IMAGE_FAMILIES else None


class ModelConfig(OpenSection):
    """``name`` and the model's own keys; ``init``: start from a run directory's newest
    checkpoint or a ``.pt`` file, taking the body's weights (``init_scope: body``) or all."""

    _section: ClassVar[str] = "model"
    name: str = "mlp"
    init: str | None = None
    init_scope: Literal["body", "all"] = "body"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.name not in MODELS:
            raise ValueError(f"model.name={self.name!r}: expected one of {sorted(MODELS)}")
        self._check_and_coerce(MODELS[self.name])
        return self

    def build(self):
        return MODELS[self.name](**self.kwargs)


class AlgorithmConfig(OpenSection):
    _section: ClassVar[str] = "algorithm"
    name: str = "maml"

    @model_validator(mode="after")
    def _check(self) -> AlgorithmConfig:
        if self.name not in ALGORITHMS:
            raise ValueError(f"algorithm.name={self.name!r}: expected one of {sorted(ALGORITHMS)}")
        cls = ALGORITHMS[self.name]
        self._check_and_coerce(cls, skip=("min_inner_steps",))
        try:
            rule = cls(**self.kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc).replace(f"algorithm({cls.__name__})", "algorithm")) from None
        self._record_resolved(rule, [f.name for f in dataclasses.fields(cls)])
        return self

    def build(self):
        """The rule object, e.g. ``MAML(inner_lr=0.01, inner_steps=1)``."""
        return ALGORITHMS[self.name](**self.kwargs)


class OuterConfig(Section):
    """The outer (meta) optimiser, on the parameter server."""

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    clip_grad_norm: float | None = Field(None, gt=0)
    zero_head: bool = False
    steps: int = Field(1000, ge=1)


class RuntimeConfig(Section):
    """How the meta-batch is cut and placed: ``meta_batch`` tasks per step in
    ``logical_shards`` fixed shards, computed by ``workers`` Ray actors. ``time_limit_s``
    bounds the wall time of the step loop (a job's allocation, a CPU budget): training stops
    after the step that crosses it, checkpoints, evaluates, and ``--resume`` continues.
    ``server_timeout_s`` bounds every wait on the parameter server; ``stop_grace_s`` is how
    long a SIGTERM/SIGINT lets the step in flight finish before it is abandoned. Steps are
    pipelined: up to ``max_lag`` steps are submitted ahead of the one the driver collects.
    ``server_shards`` splits the parameters over that many server actors;
    ``node_aggregation`` pre-sums the gradients of a node's workers on that node;
    ``deterministic`` asks torch (and cuDNN) for deterministic kernels; ``precision: bf16``
    computes meta-gradients under bf16 autocast (parameters stay float32); ``placement_wait_s``
    is how long to wait for an autoscaling cluster to grow to the resources asked for
    (0: a cluster that is too small is an error at once)."""

    meta_batch: int = Field(25, ge=1)
    logical_shards: int = Field(5, ge=1)
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, ge=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    threads_per_worker: int = Field(1, ge=1)
    placement: Literal["spread", "pack"] = "spread"
    on_worker_loss: Literal["reassign", "wait"] = "reassign"
    step_timeout_s: float = Field(300.0, gt=0)
    server_timeout_s: float = Field(300.0, gt=0)
    max_step_retries: int = Field(5, ge=0)
    time_limit_s: float | None = Field(None, gt=0)
    stop_grace_s: float = Field(20.0, gt=0)
    max_lag: int = Field(2, ge=0)
    server_shards: int = Field(1, ge=1)
    node_aggregation: bool = True
    deterministic: bool = False
    placement_wait_s: float = Field(0.0, ge=0)
    dtype: Literal["float32", "float64"] = "float32"
    precision: Literal["float32", "bf16"] = "float32"

    @model_validator(mode="after")
    def _check(self) -> RuntimeConfig:
        if self.precision == "bf16" and self.dtype != "float32":
            raise ValueError(f"runtime.precision=bf16 needs runtime.dtype=float32 (parameters and gradient "
                             f"sums stay float32), not {self.dtype}")
        if self.meta_batch % self.logical_shards:
            raise ValueError(f"runtime.meta_batch={self.meta_batch} must be a multiple of "
                             f"runtime.logical_shards={self.logical_shards}")
        if self.workers > self.logical_shards:
            raise ValueError(f"runtime.workers={self.workers} must be <= runtime.logical_shards={self.logical_shards}")
        return self

    @property
    def tasks_per_shard(self) -> int:
        return self.meta_batch // self.logical_shards


class DataConfig(Section):
    """Packed data (``distmeta data pack``): class shards of an image data set, or a fixed pool
    of procedural episodes; with no ``path`` tasks are generated on the fly. ``cache_mb``
    bounds each worker's image cache; held-out image episodes are the numbered set drawn
    with ``eval_seed`` (the same for every run)."""

    path: str | None = None
    split: str = "train"
    on_error: Literal["raise", "skip"] = "raise"
    cache_mb: float = Field(512.0, ge=0)
    eval_seed: int = Field(0, ge=0)


class TrackingConfig(Section):
    """MLflow: where (``uri``), what (``log_model``: the final parameters as a pyfunc model,
    ``registered_model``: also register it under this name), how often, and under which parent
    run (``parent_run_id``: a sweep's)."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "distmeta"
    log_every: int = Field(10, ge=1)
    system_metrics: bool = True
    log_model: bool = True
    registered_model: str | None = None
    parent_run_id: str | None = None


class CheckpointConfig(Section):
    every: int = Field(100, ge=1)
    keep: int = Field(3, ge=1)


class EvalConfig(Section):
    """Meta-test: ``episodes`` held-out tasks of ``split``, adapted with ``steps`` inner steps
    (default: the rule's). Image tasks may be tested with another ``way``, ``shot`` or
    ``query`` than they were trained with (e.g. train 20-way, test 5-way, as R2-D2 does)."""

    episodes: int = Field(600, ge=1)
    steps: int | None = Field(None, ge=0)
    batch: int = Field(25, ge=1)
    split: str = "test"
    way: int | None = Field(None, ge=2)
    shot: int | None = Field(None, ge=1)
    query: int | None = Field(None, ge=1)


class RunConfig(Section):
    name: str = "run"
    seed: int = Field(0, ge=0)
    run_dir: str | None = None
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    outer: OuterConfig = OuterConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    data: DataConfig = DataConfig()
    tracking: TrackingConfig = TrackingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check_together(self) -> RunConfig:
        way = self.task.way if self.task.kwargs.get("labels", "episode") == "episode" else None
        if self.task.family == "images" and not self.data.path:
            raise ValueError("task.family=images reads class shards: set data.path to a packed data "
                             "set (distmeta data pack ...)")
        if self.task.family not in IMAGE_FAMILIES and (self.eval.way or self.eval.shot):
            raise ValueError(f"eval.way / eval.shot: only image tasks have them, not task.family={self.task.family}")
        if self.model.name in ("conv4", "resnet12") and way is not None:
            n_way = self.model.model_extra.setdefault("n_way", way)  # type: ignore[union-attr]
            if n_way != way:
                raise ValueError(f"model.n_way={n_way} does not match task.way={way}")
        try:
            MODELS[self.model.name](**self.model.kwargs)
        except TypeError as exc:
            raise ValueError(f"model: {exc}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(msg if path and msg.startswith(path.split(".")[0] + ".") or not path else f"{path}: {msg}")
    return "; ".join(lines)


def validate(data: dict[str, Any]) -> RunConfig:
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
        value = parse_yaml(raw) if raw else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
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
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = parse_yaml(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load ``path`` (or the defaults), apply ``key=value`` overrides, validate."""
    data = read_yaml(path) if path is not None else {}
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
