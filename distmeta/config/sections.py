"""The fixed sections of a run config: every key with its type, default and description."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from distmeta import plugins
from distmeta.config.named import Section, arguments, check_kwargs

WEEK_S = 7 * 24 * 3600.0
YEAR_S = 365 * 24 * 3600.0


class OuterConfig(Section):
    """The outer (meta) optimiser, on the parameter server."""

    optimizer: str = Field("adam", description="the outer optimiser: adam, sgd, or an import path to any "
                           "torch.optim.Optimizer class (torch.optim:AdamW, mypkg.opt:Lion)")
    optimizer_args: dict[str, Any] = Field(default_factory=dict, description="other keyword arguments of the "
                                           "optimizer (betas, eps, nesterov ...), checked against its signature")
    lr: float = Field(1e-3, gt=0, le=1e3, description="outer learning rate (the peak, under a schedule)")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (outer.optimizer: sgd)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay of the outer optimiser")
    schedule: Literal["constant", "cosine", "staircase"] = Field("constant", description="the outer learning "
                                                                 "rate after warm-up: constant, cosine decay to 0 "
                                                                 "at outer.steps, or staircase: times "
                                                                 "outer.decay_rate every outer.decay_every steps")
    decay_every: int | None = Field(None, ge=1, le=10**9, description="steps between the staircase schedule's "
                                    "decays (Meta-Dataset's Trainer.decay_every)")
    decay_rate: float = Field(0.5, gt=0, le=1, description="the factor of each staircase decay (Meta-Dataset's "
                                                            "Trainer.decay_rate)")
    warmup_steps: int = Field(0, ge=0, le=10**9, description="linear warm-up of the outer learning rate over this many steps")
    lr_scaling: Literal["none", "sqrt", "linear"] = Field("none", description="scale outer.lr by "
                                                          "runtime.meta_batch / outer.lr_base_batch (linear, Goyal et "
                                                          "al. 2017) or its square root (sqrt), to raise the meta-batch "
                                                          "as workers are added; warm up with outer.warmup_steps")
    lr_base_batch: int | None = Field(None, ge=1, le=10**7, description="the meta-batch outer.lr was tuned at "
                                      "(what outer.lr_scaling scales from)")
    clip_grad_norm: float | None = Field(None, gt=0, description="clip the global norm of the meta-gradient "
                                         "to this value (null: no clipping)")
    zero_head: bool = Field(False, description="the zeroing trick (Kao et al. 2022): set the linear head to "
                            "zero at the start and after every outer step")
    steps: int = Field(1000, ge=1, le=10**9, description="outer steps to train")

    @model_validator(mode="after")
    def _check(self) -> OuterConfig:
        if self.schedule == "staircase" and self.decay_every is None:
            raise ValueError("outer.schedule=staircase needs outer.decay_every: the steps between decays")
        if self.lr_scaling != "none" and self.lr_base_batch is None:
            raise ValueError(f"outer.lr_scaling={self.lr_scaling} needs outer.lr_base_batch: the meta-batch "
                             "outer.lr was tuned at")
        cls = plugins.resolve("optimizer", self.optimizer)
        self.optimizer_args.update(check_kwargs("outer.optimizer_args", cls, self.optimizer_args, skip=("params",)))
        return self

    def peak_lr(self, meta_batch: int) -> float:
        """``lr`` scaled for ``meta_batch`` tasks per step (``lr_scaling``): the rate after warm-up."""
        if self.lr_scaling == "none" or self.lr_base_batch is None:
            return self.lr
        ratio = meta_batch / self.lr_base_batch
        return self.lr * (ratio if self.lr_scaling == "linear" else math.sqrt(ratio))

    def build(self, params: list[Any]) -> Any:
        """The optimiser over ``params``: ``lr`` and, where it takes them, ``momentum`` and
        ``weight_decay``, then ``optimizer_args``."""
        cls = plugins.resolve("optimizer", self.optimizer)
        takes = arguments(cls)
        args = {"lr": self.lr} | {k: getattr(self, k) for k in ("momentum", "weight_decay") if k in takes}
        return cls(params, **(args | self.optimizer_args))


class RuntimeConfig(Section):
    """How the meta-batch is cut and placed on the cluster, and how faults and stops are handled."""

    meta_batch: int = Field(25, ge=1, le=10**7, description="tasks per outer step")
    logical_shards: int = Field(5, ge=1, le=10**5, description="fixed shards the meta-batch is cut into: the leaves of the "
                                "reduction tree, so results do not depend on the number of workers")
    workers: int = Field(2, ge=1, le=10**4, description="worker actors computing the logical shards' meta-gradients")
    cpus_per_worker: float = Field(1.0, ge=0, description="CPUs Ray reserves per worker")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs Ray reserves per worker (a worker with a GPU "
                                   "computes on it)")
    threads_per_worker: int = Field(1, ge=1, le=1024, description="torch threads in each worker and server")
    placement: Literal["spread", "pack"] = Field("spread", description="the workers' placement group strategy: "
                                                 "spread over nodes, or pack onto few")
    on_worker_loss: Literal["reassign", "wait"] = Field("reassign", description="a lost worker's shards are "
                                                        "recomputed by the live workers, or by it once restarted")
    step_timeout_s: float = Field(300.0, gt=0, le=WEEK_S, description="a worker that does not answer a step within this "
                                  "is restarted and its shards recomputed")
    server_timeout_s: float = Field(300.0, gt=0, le=WEEK_S, description="bound on every wait for the parameter server")
    max_step_retries: int = Field(5, ge=0, le=1000, description="retries of a step's failed shards (or of a failed apply) "
                                  "before the run fails")
    time_limit_s: float | None = Field(None, gt=0, le=YEAR_S, description="wall time of the step loop (a job's allocation, a "
                                       "CPU budget): training stops after the step that crosses it, checkpoints, "
                                       "evaluates; --resume continues")
    stop_grace_s: float = Field(20.0, gt=0, le=WEEK_S, description="after SIGTERM/SIGINT, how long the steps in flight may "
                                "take to finish before they are abandoned")
    max_lag: int = Field(2, ge=0, le=64, description="steps submitted ahead of the one the driver collects (pipelining)")
    server_shards: int = Field(1, ge=1, le=1024, description="parameter-server actors the parameters are split over")
    node_aggregation: bool = Field(True, description="pre-sum the gradients of a node's workers on that node, "
                                   "so the server receives one per node")
    deterministic: bool = Field(False, description="deterministic torch (and cuDNN) kernels, for bit-identity "
                                "on GPUs; otherwise cuDNN benchmarks its convolution algorithms")
    tf32: bool = Field(False, description="TF32 matrix products and convolutions on CUDA (faster, about 3 "
                       "significant digits); off: full float32")
    dashboard: bool = Field(True, description="start Ray's dashboard (on 127.0.0.1) with the local Ray distmeta "
                            "starts (a cluster joined keeps its own)")
    placement_wait_s: float = Field(0.0, ge=0, le=WEEK_S, description="how long to wait for an autoscaling cluster to grow "
                                    "to the resources asked for (0: too small a cluster is an error at once)")
    dtype: Literal["float32", "float64"] = Field("float32", description="dtype of parameters, episodes and "
                                                 "gradient sums")
    precision: Literal["float32", "bf16"] = Field("float32", description="bf16: meta-gradients computed under "
                                                  "bf16 autocast (parameters and sums stay float32)")
    lease_timeout_s: float = Field(60.0, ge=1, le=WEEK_S, description="a run directory's lease (one driver at a "
                                   "time) whose heartbeat is older than this is taken over")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray's runtime_env for every actor (working_dir, "
                                               "py_modules, pip, env_vars ...); the local packages that the config's "
                                               "import paths name are always added to py_modules")

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
    """Packed data (``distmeta data pack``); with no ``path`` tasks are generated on the fly."""

    path: str | None = Field(None, description="a packed data set (local or pyarrow.fs URI): class shards of "
                             "an image data set, or a fixed pool of procedural episodes")
    split: str = Field("train", description="the split to meta-train on")
    on_error: Literal["raise", "skip"] = Field("raise", description="a missing or corrupt shard file: an error "
                                               "naming it, or skipped and counted")
    cache_mb: float = Field(512.0, ge=0, le=10**7, description="bound on each worker's image cache")
    eval_seed: int = Field(0, ge=0, description="seed of the numbered set of held-out image episodes (the same "
                           "for every run)")
    sources: list[str] | None = Field(None, min_length=1, description="task.family=meta_dataset: the packed "
                                      "sources (class shards, e.g. distmeta data pack meta-dataset), one "
                                      "episode's source drawn per task")
    source_weights: list[float] | None = Field(None, description="task.family=meta_dataset: how often each of "
                                               "data.sources is drawn (null: uniformly)")
    eval_sources: list[str] | None = Field(None, min_length=1, description="task.family=meta_dataset: the "
                                           "sources meta-tested, each on its own (null: data.sources; the paper "
                                           "trains on ILSVRC only and tests on all ten)")


class TrackingConfig(Section):
    """MLflow: where, what and how often."""

    enabled: bool = Field(True, description="record the run in MLflow")
    uri: str | None = Field(None, description="tracking URI (null: $MLFLOW_TRACKING_URI, else an SQLite store "
                            "mlflow.db in the working directory)")
    experiment: str = Field("distmeta", description="MLflow experiment, created when missing")
    log_every: int = Field(10, ge=1, le=10**9, description="log the training metrics every this many steps")
    system_metrics: bool = Field(True, description="record MLflow's system/* metrics (CPU, memory, GPU)")
    log_model: bool = Field(True, description="log the final parameters as a pyfunc model that adapts and predicts")
    registered_model: str | None = Field(None, description="also register the logged model under this name")
    parent_run_id: str | None = Field(None, description="nest the run under this MLflow run (a sweep's)")


class CheckpointConfig(Section):
    """Checkpoints of the parameter server, in ``RUN_DIR/checkpoints``."""

    every: int = Field(100, ge=1, le=10**9, description="write a checkpoint every this many steps")
    keep: int = Field(3, ge=1, le=10**4, description="keep the newest this many checkpoints")
    retries: int = Field(3, ge=0, le=100, description="retries of a checkpoint write that failed, before the run "
                         "stops (with its state in checkpoint.fallback_dir)")
    retry_wait_s: float = Field(1.0, ge=0, le=3600, description="wait before the first retry of a failed checkpoint "
                                "write; doubled before each next one")
    fallback_dir: str | None = Field(None, description="a local folder for the state of a run whose checkpoints "
                                     "cannot be written (null: ~/.cache/distmeta/fallback/RUN_NAME)")


class EvalConfig(Section):
    """Meta-test on held-out tasks after training and in ``distmeta eval``."""

    episodes: int = Field(600, ge=1, le=10**6, description="held-out tasks to evaluate on")
    steps: int | None = Field(None, ge=0, le=10**5, description="inner steps at test time (null: the rule's inner_steps)")
    batch: int = Field(25, ge=1, le=10**5, description="held-out tasks adapted at once")
    split: str = Field("test", description="the held-out split")
    way: int | None = Field(None, ge=2, description="image tasks: classes per test task (null: task.way)")
    shot: int | None = Field(None, ge=1, description="image tasks: support examples per class (null: task.shot)")
    query: int | None = Field(None, ge=1, description="image tasks: query examples per class (null: task.query)")
