"""Section ``batch``: scaling the task batch. Steps and tasks to an accuracy on Omniglot
5-way 1-shot at meta-batch 16, 32, 64 and 128 under each ``outer.lr_scaling`` rule.

A user who adds workers keeps each worker's share of the meta-batch and raises
``runtime.meta_batch`` with them; a step then takes about as long on W workers at meta-batch
16 W as on one worker at 16 (the ``scaling`` section measures how close), so the steps to an
accuracy are what adding workers buys. Every run is ``distmeta train`` of
``configs/omniglot_5w1s_maml_fast.yaml`` (MAML, Conv4, Adam at 2e-3 tuned at meta-batch 16)
on the local Ray with 2 workers, for the same number of tasks: the schedule is set in tasks,
so at meta-batch B the warm-up, the first-order steps and the cosine decay last 16 / B of
their steps at 16, and the rate after warm-up is ``outer.lr`` times 1 (none), sqrt(B / 16)
(sqrt) or B / 16 (linear; Goyal et al. 2017). Eight checkpoints per run are evaluated on the
config's 600 test episodes (3 inner steps, 95% CIs). The results do not depend on the number
of workers (the logical-shard sums are bit for bit the same), only the wall time does.

Each run takes a few minutes here (about 60 minutes for all ten), so it is not among the
default sections: ``make bench ARGS="--only batch"``; ``--quick`` runs 1,600 tasks each, and
``DISTMETA_BENCH_BATCH_TASKS`` sets another budget.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from rich.console import Console

from benchmarks.report import print_table
from benchmarks.time_to_accuracy import config_for, distmeta_run, pack_omniglot, score

BASE = 16
BATCHES = (16, 32, 64, 128)
RULES = ("none", "sqrt", "linear")
THRESHOLDS = (0.90, 0.93, 0.95, 0.97)
POINTS = 8
DAY_S = 86_400.0
TASKS_ENV = "DISTMETA_BENCH_BATCH_TASKS"
"""Tasks per run (default 32,000; 1,600 with ``--quick``): where more time is at hand, a budget
that takes every run to 97%."""


def protocol(batch: int, rule: str, tasks: int) -> list[str]:
    """The fast config's schedule in tasks, over a budget of ``tasks``: its warm-up (1/30 of
    the run), first-order steps (the first third) and cosine decay to 0 at the end, at
    ``batch`` tasks a step under ``rule``."""
    steps = tasks // batch
    return [f"runtime.meta_batch={batch}", f"outer.lr_scaling={rule}", f"outer.lr_base_batch={BASE}",
            f"outer.steps={steps}", f"outer.warmup_steps={max(1, round(steps / 30))}",
            f"algorithm.first_order_steps={round(steps / 3)}"]


def runs() -> list[tuple[int, str]]:
    """(meta-batch, rule) pairs: at the base meta-batch the three rules are one run."""
    return [(BASE, "none")] + [(b, r) for b in BATCHES if b != BASE for r in RULES]


def first_reaching(points: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    """The first evaluated point at or above ``threshold``, or None."""
    return next((p for p in points if p["acc"] >= threshold), None)


def run(quick: bool, console: Console) -> dict[str, Any]:
    tasks = int(os.environ.get(TASKS_ENV) or (1_600 if quick else 32_000))
    results = []
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-batch-") as tmp:
        data = pack_omniglot(tmp)
        for batch, rule in runs():
            overrides = protocol(batch, rule, tasks)
            cfg = config_for(data, DAY_S, overrides)
            points, info = distmeta_run(data, DAY_S, f"{tmp}/run-{batch}-{rule}",
                                        every=max(1, cfg.outer.steps // POINTS), overrides=overrides)
            scored = [{"step": p["step"], "tasks": p["step"] * batch, "t_s": p["t_s"], **score(cfg, p["params"])}
                      for p in points]
            results.append({"meta_batch": batch, "rule": rule if batch != BASE else "any",
                            "peak_lr": cfg.outer.peak_lr(batch), "steps": info["steps"], "points": scored,
                            "wall_s": scored[-1]["t_s"] if scored else None})
            console.print(f"batch {batch} {rule}: " + ", ".join(f"{p['step']}:{100 * p['acc']:.1f}" for p in scored))
    report(results, tasks, console)
    plot(results, "bench-batch.png")
    return {"tasks_per_run": tasks, "runs": results, "plot": "bench-batch.png"}


def report(results: list[dict[str, Any]], tasks: int, console: Console) -> list[list[str]]:
    """The table: per run, the steps / tasks at the first checkpoint reaching each accuracy."""
    rows = []
    for r in results:
        cells = []
        for thr in THRESHOLDS:
            hit = first_reaching(r["points"], thr)
            cells.append(f"{hit['step']} / {hit['tasks']:,}" if hit else "-")
        last = r["points"][-1]
        rows.append([str(r["meta_batch"]), r["rule"], f"{r['peak_lr']:.4f}", *cells,
                     f"{100 * last['acc']:.1f} ± {100 * last['ci95']:.1f}%", f"{r['wall_s']:.0f}"])
    print_table(console, f"batch: Omniglot 5-way 1-shot MAML, {tasks:,} tasks per run; steps / tasks to each test "
                "accuracy (600 episodes, first of 8 checkpoints)",
                ["meta-batch", "lr_scaling", "peak lr", *[f"to {100 * t:.0f}%" for t in THRESHOLDS],
                 "final acc", "wall s (2 workers)"], rows)
    return rows


def plot(results: list[dict[str, Any]], path: str) -> None:
    """Test accuracy against outer steps (left) and tasks (right), one line per (meta-batch, rule)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    styles = {"any": "-", "none": ":", "sqrt": "--", "linear": "-"}
    colours = dict(zip(BATCHES, ("black", "tab:blue", "tab:orange", "tab:red"), strict=True))
    for r in results:
        for ax, x in zip(axes, ("step", "tasks"), strict=True):
            ax.plot([p[x] for p in r["points"]], [100 * p["acc"] for p in r["points"]], styles[r["rule"]],
                    color=colours[r["meta_batch"]], marker="o", markersize=3,
                    label=f"{r['meta_batch']}, {r['rule']}")
    axes[0].set_xlabel("outer steps")
    axes[0].set_xscale("log")
    axes[1].set_xlabel("tasks")
    axes[0].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=80)
    axes[1].legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
