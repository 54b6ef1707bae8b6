"""What the CLI shows: a live progress line while training, a summary and tables after."""

from __future__ import annotations

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

console = Console()


class TrainingProgress:
    """step, tasks/s, query loss/accuracy, ETA."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task: Any = None
        self.t0 = time.perf_counter()

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, run_dir: str, cfg: Any, first_step: int) -> None:
        console.print(f"run dir: [bold]{run_dir}[/]  ({cfg.algorithm.name} on {cfg.task.family}, "
                      f"{cfg.runtime.workers} workers, {cfg.runtime.logical_shards} logical shards, "
                      f"meta-batch {cfg.runtime.meta_batch})")
        self.task = self.progress.add_task("train", total=cfg.outer.steps, completed=first_step, info="starting")

    def step(self, step: int, m: dict[str, float]) -> None:
        info = f"tasks/s {m['tasks_per_s']:7.1f}  query loss {m.get('query_loss_before', float('nan')):.3f} -> {m['query_loss']:.3f}"
        if "query_acc" in m:
            info += f"  acc {m.get('query_acc_before', float('nan')):.3f} -> {m['query_acc']:.3f}"
        if m.get("retries"):
            info += f"  retries {int(m['retries'])}"
        self.progress.update(self.task, completed=step, info=info)


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
    console.print(_eval_table(report, f"meta-test on {report.episodes} held-out episodes ({report.split}), 95% CI"))


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
        uri = result.tracking_uri or ""
        rows.append(("open the UI", f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else uri))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if result.evaluation is not None:
        ev = result.evaluation
        print_evaluation(ev)
        verdict = "meta-learning worked" if ev.post < ev.pre else "no gain from adaptation yet"
        console.print(f"post-adaptation query loss {ev.post:.4f} vs pre-adaptation {ev.pre:.4f}: [bold]{verdict}[/]")
