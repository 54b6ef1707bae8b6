"""Meta-test: adapt to held-out tasks, report query loss/accuracy per inner step with 95%
confidence intervals (the protocol of Finn et al. 2017: mean over e.g. 600 episodes).

Depends on the config, the tasks and the rules only: a run directory, a checkpoint or a
tracker is the caller's business (:class:`distmeta.runtime.run.Run`, the logged model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from distmeta.algorithms import Evaluation
from distmeta.config import MD_FAMILY, RunConfig
from distmeta.leaderboard import rank, setting
from distmeta.models import representation
from distmeta.tasks import principal_angle_distance
from distmeta.tasks.sources import evaluation_batches, md_tasks, source_batches, task_source
from distmeta.types import EpisodeBatch, Params


@dataclass(frozen=True)
class EvalReport:
    split: str
    episodes: int
    steps: list[int]
    loss: list[float]
    loss_ci95: list[float]
    acc: list[float] | None
    acc_ci95: list[float] | None
    sources: dict[str, EvalReport] = field(default_factory=dict)
    """Meta-Dataset: each source's own report (the paper's table is per source)."""
    ranking: dict[str, Any] = field(default_factory=dict)
    """Meta-Dataset: the run's rank among the paper's methods (:func:`distmeta.leaderboard.rank`)."""

    @classmethod
    def of(cls, split: str, total: Evaluation, classification: bool,
           sources: dict[str, EvalReport] | None = None) -> EvalReport:
        loss, acc = total.mean()
        loss_ci, acc_ci = total.ci95()
        return cls(split, total.n_tasks, list(range(len(loss))), loss, loss_ci,
                   acc if classification else None, acc_ci if classification else None, dict(sources or {}))

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for i, s in enumerate(self.steps):
            row = {"inner_steps": s, "query_loss": self.loss[i], "query_loss_ci95": self.loss_ci95[i]}
            if self.acc is not None and self.acc_ci95 is not None:
                row |= {"query_acc": self.acc[i], "query_acc_ci95": self.acc_ci95[i]}
            rows.append(row)
        return rows

    @property
    def pre(self) -> float:
        return self.loss[0]

    @property
    def post(self) -> float:
        return self.loss[-1]


@dataclass(frozen=True)
class Learner:
    """A run's model and rule at its ``runtime.dtype``, with meta-learned parameters, ready to
    adapt: what evaluation and the logged model both use. The model is in eval mode (no
    DropBlock); ``steps`` is the number of inner steps at test time (``eval.steps``, else the
    rule's ``inner_steps``, at least 1)."""

    model: nn.Module
    rule: Any
    params: Params
    dtype: torch.dtype
    steps: int

    device: torch.device = torch.device("cpu")

    @classmethod
    def of(cls, cfg: RunConfig, params: Params, device: torch.device | str = "cpu") -> Learner:
        dtype, device = getattr(torch, cfg.runtime.dtype), torch.device(device)
        rule = cfg.algorithm.build()
        steps = cfg.eval.steps if cfg.eval.steps is not None else max(getattr(rule, "inner_steps", 0), 1)
        return cls(cfg.model.build().to(device, dtype).eval(), rule,
                   {k: v.to(device, dtype) for k, v in params.items()}, dtype, steps, device)

    def evaluate(self, batch: EpisodeBatch, steps: int | None = None) -> Evaluation:
        """Query loss/accuracy after 0..``steps`` inner steps, summed over the batch's tasks."""
        return self.rule.evaluate(self.model, self.params, batch.to(self.device, self.dtype),
                                  steps=self.steps if steps is None else steps)

    def predict(self, batch: EpisodeBatch, steps: int | None = None) -> Tensor:
        """Query outputs ``[T, Q, ...]`` after ``steps`` inner steps on each task's support set."""
        return self.rule.predict(self.model, self.params, batch.to(self.device, self.dtype),
                                 steps=self.steps if steps is None else steps)


def evaluate(cfg: RunConfig, params: Params, split: str | None = None, episodes: int | None = None,
             steps: int | None = None, device: torch.device | str = "cpu") -> EvalReport:
    """Adapt ``params`` to held-out tasks of ``split`` for 0..``steps`` inner steps, on ``device``.
    Meta-Dataset's sources are each evaluated on their own ``episodes`` (600 in the paper),
    reported per source and together."""
    learner, split = Learner.of(cfg, params, device), split or cfg.eval.split
    if cfg.task.family != MD_FAMILY:
        total, classification = _score(learner, evaluation_batches(cfg, split, episodes), steps, split)
        return EvalReport.of(split, total, classification)
    reports, total, tasks = {}, None, md_tasks(cfg, split, held_out=True)
    for s, name in enumerate(tasks.names):
        part, _ = _score(learner, source_batches(cfg, s, split, episodes, tasks=tasks), steps, f"{split} ({name})")
        reports[name] = EvalReport.of(split, part, True)
        total = part if total is None else total + part
    accuracy = {name: 100 * r.acc[-1] for name, r in reports.items()}  # type: ignore[index]
    ranking = rank(accuracy, setting(md_tasks(cfg, cfg.data.split).names), cfg.name or "this run")
    return dataclasses.replace(EvalReport.of(split, total, True, reports), ranking=ranking)  # type: ignore[arg-type]


def _score(learner: Learner, batches: Iterable[Any], steps: int | None, what: str) -> tuple[Evaluation, bool]:
    total: Evaluation | None = None
    classification = False
    for batch in batches:
        classification = batch.loss == "cross_entropy"
        part = learner.evaluate(batch, steps)
        total = part if total is None else total + part
    if total is None:
        raise ValueError(f"evaluation split {what!r} has no episodes")
    return total, classification


def diagnostics(cfg: RunConfig) -> Callable[[Params], dict[str, float]] | None:
    """Per-step diagnostics of the parameters, where the task family has a ground truth: for
    the linear-representation family, the principal-angle distance of the learned B to B*
    (Collins et al. 2022)."""
    if cfg.task.family != "linear_rep" or cfg.model.name != "linear_rep":
        return None
    b_star = getattr(task_source(cfg), "b_star", None)
    if b_star is None:
        return None
    model = cfg.model.build()
    return lambda params: {"principal_angle_distance": principal_angle_distance(representation(model, params), b_star)}
