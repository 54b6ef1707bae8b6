"""``distmeta.fit``: meta-train from Python, with a config and, optionally, the user's own
model, task family and rule as objects.

The objects are *given* (:func:`distmeta.plugins.give`): the config names them
``given-model``, ``given-task``, ``given-rule``, and every actor receives them with the config
(Ray pickles them, by value for what a notebook defines). A class or a function is a factory,
called with the section's other keys; anything else is used as it is (a model: a copy of it,
so its initial weights are the ones it holds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distmeta import plugins
from distmeta.config import RunConfig, apply_overrides, load_config, validate
from distmeta.runtime.run import Callbacks, Run, TrainResult

SECTIONS = {"model": ("model", "name"), "task": ("task", "family"), "rule": ("algorithm", "name")}
KEPT = {"model": ("head", "init", "init_scope")}
"""The keys of a section that still apply when its class is given as an object."""


def as_dict(config: str | Path | dict[str, Any] | RunConfig | None) -> dict[str, Any]:
    """A config file's path, a dict of sections, or a :class:`RunConfig`, as sections."""
    if config is None:
        return {}
    if isinstance(config, RunConfig):
        return config.to_dict()
    if isinstance(config, dict):
        return dict(config)
    return load_config(config).to_dict()


def with_objects(data: dict[str, Any], objects: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each given object named in its section (its class's keys dropped)."""
    out = dict(data)
    for kind, obj in objects.items():
        section, key = SECTIONS[kind]
        kept = {k: v for k, v in (out.get(section) or {}).items() if k in KEPT.get(kind, ())}
        out[section] = kept | {key: plugins.give("algorithm" if kind == "rule" else kind, obj)}  # type: ignore[arg-type]
    return out


def fit(config: str | Path | dict[str, Any] | RunConfig | None = None, *, model: Any = None, task: Any = None,
        rule: Any = None, callbacks: Callbacks | None = None, **options: Any) -> TrainResult:
    """Meta-train ``config`` (a YAML file, a dict of sections or a :class:`RunConfig`) on a
    local Ray (or ``address=``), with ``model``, ``task`` and ``rule`` given as objects or
    factories where they are not named in the config.

    ``options``: ``overrides`` (``key=value`` strings), ``run_dir``, ``resume`` (a run
    directory, or ``"auto"``), and :meth:`Run.train`'s ``address``, ``until_step``,
    ``evaluate_at_end``. Returns the :class:`TrainResult`: ``params`` (the final parameters),
    ``run_dir``, ``run_id`` (the MLflow run), ``evaluation``.
    """
    objects = {k: v for k, v in (("model", model), ("task", task), ("rule", rule)) if v is not None}
    plugins.forget()
    data = with_objects(as_dict(config), objects)
    cfg = validate(apply_overrides(data, list(options.pop("overrides", None) or [])))
    run = Run.open(cfg, run_dir=options.pop("run_dir", None), resume=options.pop("resume", None))
    return run.train(callbacks=callbacks, **options)
