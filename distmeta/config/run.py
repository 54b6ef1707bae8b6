"""The whole run config: its sections, and the checks that span several of them."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import Field, model_validator

from distmeta import plugins
from distmeta.config.named import (
    IMAGE_FAMILIES,
    MD_FAMILY,
    AlgorithmConfig,
    ModelConfig,
    Section,
    TaskConfig,
)
from distmeta.config.sections import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    OuterConfig,
    RuntimeConfig,
    TrackingConfig,
)
from distmeta.uri import redact


class RunConfig(Section):
    """A run: what it trains (``task``, ``model``, ``algorithm``, ``outer``), how (``runtime``,
    ``data``) and what it records (``tracking``, ``checkpoint``, ``eval``)."""

    name: str = Field("run", description="the run's name: the default run directory is runs/NAME-TIME")
    seed: int = Field(0, ge=0, description="seed of the model's initialisation and of every task drawn")
    run_dir: str | None = Field(None, description="the run directory: a local path or a pyarrow.fs URI "
                                "(s3://, gs://, hdfs://); --run-dir sets it")
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    outer: OuterConfig = Field(default_factory=OuterConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_together(self) -> RunConfig:
        way = self.task.way if self.task.kwargs.get("labels", "episode") == "episode" else None
        if self.task.family == "images" and not self.data.path:
            raise ValueError("task.family=images reads class shards: set data.path to a packed data "
                             "set (distmeta data pack ...)")
        self._check_sources()
        if self.task.family not in IMAGE_FAMILIES and (self.eval.way or self.eval.shot):
            raise ValueError(f"eval.way / eval.shot: only image tasks have them, not task.family={self.task.family}")
        if self.model.name in ("conv4", "resnet12", "resnet18") and way is not None:
            n_way = self.model.model_extra.setdefault("n_way", way)  # type: ignore[union-attr]
            if n_way != way:
                raise ValueError(f"model.n_way={n_way} does not match task.way={way}")
        if self.runtime.precision == "bf16" and self.algorithm.kwargs.get("vectorize", True) is False:
            raise ValueError("runtime.precision=bf16 with algorithm.vectorize=false: the per-task loop runs every "
                             "convolution in bf16 and its meta-gradients are far off (relative error 0.49 at one inner "
                             "step, 0.98 at two, on a small ResNet-12, against float32); set runtime.precision=float32 "
                             "(algorithm.checkpoint_inner=true bounds the memory), or algorithm.vectorize=true")
        try:
            self.model.build()
        except TypeError as exc:
            raise ValueError(f"model: {exc}") from None
        return self

    def _check_sources(self) -> None:
        data, md = self.data, self.task.family == MD_FAMILY
        if (data.sources or data.eval_sources) and not md:
            raise ValueError(f"data.sources / data.eval_sources: only task.family={MD_FAMILY} draws from several sources, not "
                             f"task.family={self.task.family}")
        if md and not (data.sources or data.path):
            raise ValueError(f"task.family={MD_FAMILY}: set data.sources to the packed sources "
                             "(distmeta data pack meta-dataset ...), or data.path to one")
        if md and data.sources and data.path:
            raise ValueError("data.path and data.sources are both set: list every source in data.sources")
        if data.source_weights is not None and len(data.source_weights) != len(self.source_paths()):
            raise ValueError(f"data.source_weights={data.source_weights}: one weight per data.sources entry "
                             f"({len(self.source_paths())})")
        if md and (self.eval.way or self.eval.shot or self.eval.query):
            raise ValueError(f"eval.way / eval.shot / eval.query: {MD_FAMILY} evaluates on the sampler's "
                             "variable-way variable-shot episodes (task.num_ways and friends fix them)")

    def source_paths(self, held_out: bool = False) -> list[str]:
        """The packed sources a run trains on: ``data.sources``, or ``data.path`` as the one;
        ``held_out``: those it meta-tests on (``data.eval_sources``, by default the same)."""
        if held_out and self.data.eval_sources:
            return list(self.data.eval_sources)
        return list(self.data.sources or ([self.data.path] if self.data.path else []))

    def import_paths(self) -> list[str]:
        """The ``package.module:attr`` names of the user's code this config uses (the model,
        task family, rule, outer optimiser, and the family's loss)."""
        names = [self.model.name, self.task.family, self.algorithm.name, self.outer.optimizer]
        if self.task.family not in IMAGE_FAMILIES:
            loss = getattr(plugins.resolve("task", self.task.family), "loss", None)
            names.append(loss if isinstance(loss, str) else "")
        return [n for n in names if plugins.is_path(n)]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def redacted_dict(self) -> dict:
        """:meth:`to_dict` with the credentials in its URIs (:data:`SECRET_KEYS`) replaced by
        ``***``: what every file distmeta writes holds. A web tracking server's user and
        password then come from ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``."""
        data = self.to_dict()
        for key in SECRET_KEYS:
            section, name = key.split(".")
            if data[section][name]:
                data[section][name] = redact(data[section][name])
        return data

    def to_yaml(self) -> str:
        """The config as YAML, credentials redacted (:meth:`redacted_dict`)."""
        return yaml.safe_dump(self.redacted_dict(), sort_keys=False)


SECRET_KEYS = ("tracking.uri", "data.path")
"""Keys whose values are URIs that may carry credentials (``scheme://user:password@host``)."""
