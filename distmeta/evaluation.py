"""Meta-test: adapt to held-out tasks, report query loss/accuracy per inner step with 95%
confidence intervals (the protocol of Finn et al. 2017: mean over e.g. 600 episodes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from distmeta.algorithms import Evaluation
from distmeta.config import RunConfig
from distmeta.runtime.sources import evaluation_batches
from distmeta.types import Params


@dataclass(frozen=True)
class EvalReport:
    split: str
    episodes: int
    steps: list[int]
    loss: list[float]
    loss_ci95: list[float]
    acc: list[float] | None
    acc_ci95: list[float] | None

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


def evaluate(cfg: RunConfig, params: Params, split: str | None = None, episodes: int | None = None,
             steps: int | None = None) -> EvalReport:
    """Adapt ``params`` to held-out tasks of ``split`` for 0..``steps`` inner steps."""
    rule = cfg.algorithm.build()
    steps = steps if steps is not None else (cfg.eval.steps if cfg.eval.steps is not None else
                                             max(getattr(rule, "inner_steps", 0), 1))
    dtype = getattr(torch, cfg.runtime.dtype)
    model = cfg.model.build().to(dtype)
    params = {k: v.to(dtype) for k, v in params.items()}
    total: Evaluation | None = None
    for batch in evaluation_batches(cfg, split, episodes):
        part = rule.evaluate(model, params, batch.to(dtype=dtype), steps=steps)
        total = part if total is None else total + part
    if total is None:
        raise ValueError(f"evaluation split {split or cfg.eval.split!r} has no episodes")
    loss, acc = total.mean()
    loss_ci, acc_ci = total.ci95()
    classification = cfg.task.family == "omniglot" or (batch.loss == "cross_entropy")
    return EvalReport(split or cfg.eval.split, total.n_tasks, list(range(len(loss))), loss, loss_ci,
                      acc if classification else None, acc_ci if classification else None)
