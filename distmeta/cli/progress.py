"""What the CLI shows: a live progress line while training, a summary and tables after."""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from distmeta.uri import redact

console = Console()
progress_log = logging.getLogger("distmeta.progress")


def progress_line(step: int, total: int, m: dict[str, float], elapsed_s: float, first_step: int) -> str:
    """One plain line: step, tasks/s, query loss and accuracy before -> after, retries, ETA."""
    nan = float("nan")
    line = (f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)  tasks/s {m.get('tasks_per_s', nan):.1f}  "
            f"query loss {m.get('query_loss_before', nan):.4f} -> {m.get('query_loss', nan):.4f}")
    if "query_acc" in m:
        line += f"  acc {m.get('query_acc_before', nan):.3f} -> {m['query_acc']:.3f}"
    line += f"  retries {int(m.get('retries', 0))}"
    done = step - first_step
    if done > 0 and step < total:
        eta = elapsed_s / done * (total - step)
        line += f"  ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}"
    return line


class TrainingProgress:
    """step, tasks/s, query loss/accuracy, ETA: a live rich bar on a terminal; otherwise (a log
    file, ``ray job logs``, a SLURM ``.out``, ``kubectl logs``) one plain line every
    ``every_s`` seconds and at the last step, on the ``distmeta.progress`` logger, which the
    CLI sends to stdout and to the run's ``train.log``."""

    def __init__(self, every_s: float = 30.0, live: bool | None = None) -> None:
        self.every_s = every_s
        self.live = console.is_terminal if live is None else live
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console, transient=False) if self.live else None
        self.task: Any = None
        self.t0 = self.last = time.perf_counter()
        self.total, self.first = 0, 0
        self.seen: dict[str, float] = {}  # the rule's metrics come on logged steps only

    def __enter__(self) -> TrainingProgress:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start(self, run_dir: str, cfg: Any, first_step: int) -> None:
        self.total, self.first, self.t0 = cfg.outer.steps, first_step, time.perf_counter()
        self.last = self.t0
        text = (f"run dir: {run_dir}  ({cfg.algorithm.name} on {cfg.task.family}, {cfg.runtime.workers} workers, "
                f"{cfg.runtime.logical_shards} logical shards, meta-batch {cfg.runtime.meta_batch}, "
                f"from step {first_step})")
        progress_log.info(text)
        if self.progress is not None:
            self.task = self.progress.add_task("train", total=cfg.outer.steps, completed=first_step, info="starting")

    def step(self, step: int, m: dict[str, float]) -> None:
        now = time.perf_counter()
        self.seen.update(m)
        line = progress_line(step, self.total, self.seen, now - self.t0, self.first)
        if now - self.last >= self.every_s or step >= self.total:
            self.last = now
            progress_log.info(line)
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=line.split("  ", 2)[2])


def _eval_table(report: Any, title: str) -> Table:
    table = Table(title=title)
    table.add_column("inner steps", justify="right")
    table.add_column("query loss", justify="right")
    if report.acc is not None:
        table.add_column("query acc", justify="right")
    for row in report.table():
        cells = [str(row["inner_steps"]), f"{row['query_loss']:.4f} ± {row['query_loss_ci95']:.4f}"]
        if report.acc is not None:
            cells.append(f"{100 * row['query_acc']:.2f}% ± {100 * row['query_acc_ci95']:.2f}")
        table.add_row(*cells)
    return table


def print_evaluation(report: Any) -> None:
    """The meta-test table on the terminal, and its rows as lines in the log (train.log)."""
    title = f"meta-test on {report.episodes} held-out episodes ({report.split}), 95% CI"
    console.print(_eval_table(report, title))
    for row in report.table():
        acc = (f"  query acc {100 * row['query_acc']:.2f}% ± {100 * row['query_acc_ci95']:.2f}"
               if report.acc is not None else "")
        progress_log.info("%s: after %d inner steps  query loss %.4f ± %.4f%s", title, row["inner_steps"],
                 row["query_loss"], row["query_loss_ci95"], acc)
    sources = getattr(report, "sources", {})
    if sources:
        table = Table(title=f"per source, after {report.steps[-1]} inner steps, 95% CI")
        for column in ("source", "episodes", "query acc"):
            table.add_column(column, justify="left" if column == "source" else "right")
        for name, part in sources.items():
            table.add_row(name, str(part.episodes), f"{100 * part.acc[-1]:.2f}% ± {100 * part.acc_ci95[-1]:.2f}")
            progress_log.info("%s: source %s: %d episodes  query acc %.2f%% ± %.2f", title, name, part.episodes,
                              100 * part.acc[-1], 100 * part.acc_ci95[-1])
        console.print(table)
    ranking = getattr(report, "ranking", {})
    if ranking:
        places = ", ".join(f"{s} {r:g}" for s, r in ranking["rank"].items())
        paper = ", ".join(f"{m} {r:.2f}" for m, r in ranking["paper_average_ranks"].items())
        text = (f"rank among Triantafillou et al. 2020's methods (trained on {ranking['setting']}): average "
                f"{ranking['average_rank']:.2f} over {len(ranking['sources'])} sources ({places}); theirs: {paper}")
        console.print(text, soft_wrap=True, markup=False)
        progress_log.info("%s", text)


def print_summary(result: Any) -> None:
    table = Table(title="distmeta train: summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    last = result.history[-1][1] if result.history else {}
    limit = result.config.runtime.time_limit_s
    stop = f" (stopped by runtime.time_limit_s={limit:g})" if result.stopped_by_time_limit else ""
    rows = [("steps", f"{result.step} / {result.config.outer.steps}{stop}"),
            ("wall time", f"{result.wall_s:.1f} s (first step after {result.first_step_s or 0:.1f} s)"),
            ("throughput", f"{result.tasks_per_s:.1f} tasks/s"),
            ("retries / skipped steps", f"{result.counters.retries} / {int(last.get('skipped_steps', 0))}"),
            ("run dir", result.run_dir)]
    if result.run_id:
        rows.append(("MLflow run", result.run_id))
        uri = redact(result.tracking_uri or "")
        rows.append(("open the UI", f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else uri))
    if getattr(result, "model_uri", None):
        rows.append(("MLflow model", result.model_uri))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if result.evaluation is not None:
        ev = result.evaluation
        print_evaluation(ev)
        verdict = "meta-learning worked" if ev.post < ev.pre else "no gain from adaptation yet"
        console.print(f"post-adaptation query loss {ev.post:.4f} vs pre-adaptation {ev.pre:.4f}: [bold]{verdict}[/]")


def print_sweep(result: Any) -> None:
    """The trials' table, the best config's path and the parent MLflow run."""
    rows = result.rows
    keys = [k for k in (rows[0] if rows else {}) if k not in ("trial", "status", "step", "val_query_loss",
                                                              "val_query_acc", "error")]
    table = Table(title=f"distmeta sweep: {len(rows)} trials in {result.wall_s:.0f} s")
    for col in ["trial", *keys, "status", "step", "val loss", "val acc"]:
        table.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    for r in rows:
        table.add_row(str(r["trial"]), *[fmt(r[k]) for k in keys], r["status"] + (f" ({r['error']})" if r["error"] else ""),
                      fmt(r["step"]), fmt(r["val_query_loss"]), fmt(r["val_query_acc"]))
    console.print(table)
    for name, where in result.outputs.items():
        console.print(f"{name}: {where}")
    if result.parent_run_id:
        console.print(f"MLflow run of the sweep: {result.parent_run_id} (one nested run per trial)")
