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
    model = cfg.model.build().to(dtype).eval()  # meta-test: no DropBlock
    params = {k: v.to(dtype) for k, v in params.items()}
    total: Evaluation | None = None
    classification = False
    for batch in evaluation_batches(cfg, split, episodes):
        classification = batch.loss == "cross_entropy"
        part = rule.evaluate(model, params, batch.to(dtype=dtype), steps=steps)
        total = part if total is None else total + part
    if total is None:
        raise ValueError(f"evaluation split {split or cfg.eval.split!r} has no episodes")
    loss, acc = total.mean()
    loss_ci, acc_ci = total.ci95()
    return EvalReport(split or cfg.eval.split, total.n_tasks, list(range(len(loss))), loss, loss_ci,
                      acc if classification else None, acc_ci if classification else None)


def evaluate_run(target: str, split: str | None = None, steps: int | None = None,
                 episodes: int | None = None, log_to_tracker: bool = True) -> EvalReport:
    """``distmeta eval RUN_DIR|CHECKPOINT``: evaluate the newest (or the given) checkpoint and
    log the result to the run's MLflow run."""

    from distmeta.config import parse_yaml, validate
    from distmeta.runtime.checkpoint import FOLDER, load_checkpoint
    from distmeta.runtime.storage import RunDir

    is_file = target.endswith(".pt")
    location = target.rsplit("/", 2)[0] if is_file and f"/{FOLDER}/" in target else target
    rd = RunDir(location)
    if not rd.exists("config.yaml"):
        raise FileNotFoundError(f"{location}: no config.yaml; expected a distmeta run directory or one of its checkpoints")
    cfg = validate(parse_yaml(rd.read_text("config.yaml")))
    step = int(target.rsplit("step-", 1)[1].split(".")[0]) if is_file else None
    state = load_checkpoint(rd, step)
    if state is None:
        raise FileNotFoundError(f"{location}: no checkpoint to evaluate")
    report = evaluate(cfg, state["params"], split, episodes, steps)
    if log_to_tracker and cfg.tracking.enabled and rd.exists("tracking.json"):
        from distmeta.runtime.report import Reporter

        reporter = Reporter(cfg, rd)
        reporter.start_child(f"eval-{report.split}-step{state['step']}", {
            "split": report.split, "episodes": report.episodes, "inner_steps": len(report.steps) - 1,
            "checkpoint_step": state["step"]})
        reporter.log_evaluation(report, int(state["step"]))
        reporter.tracker.end("FINISHED")
    return report
