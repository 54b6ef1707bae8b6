"""Section ``tta``: time to accuracy on Omniglot 5-way 1-shot, distmeta against a plain loop.

Both run the protocol of ``configs/omniglot_5w1s_maml_fast.yaml`` (Conv4, MAML, inner lr 0.4,
one inner step, first order for the first steps, meta-batch 16, Adam with warm-up and cosine
decay) on the same episodes for the same wall-time budget, one after the other on this
machine:

* ``distmeta train`` of that config, from the command line as a user runs it (its start-up
  counted), on the local Ray with its workers;
* a plain per-task loop in one process with all the machine's threads: for each task,
  ``torch.autograd.grad`` of the support loss (with ``create_graph`` when second order), the
  adapted parameters, the query loss's ``backward`` into ``theta``; then ``torch.optim.Adam``.
  What a user writes with learn2learn or higher, without either.

Every checkpoint of the distmeta run, and a snapshot of the loop every ``budget / 6``, is
evaluated with the same evaluation (``eval.episodes`` test episodes, ``eval.steps`` inner
steps, 95% CIs): accuracy against time since launch. It takes about 2 x 15 minutes plus the
evaluations, so it is not among the default sections: ``make bench ARGS="--only tta"``.
Needs the Omniglot arrays (``DISTMETA_OMNIGLOT`` or ``task.root``); ``--quick`` runs 90 s each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.report import print_table

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "omniglot_5w1s_maml_fast.yaml")


def config_for(data: str, budget_s: float, extra: list[str] | None = None):
    from distmeta.config import load_config

    return load_config(CONFIG, [f"data.path={data}", f"runtime.time_limit_s={budget_s}", "tracking.enabled=false",
                                *(extra or [])])


def score(cfg, params) -> dict[str, float]:
    from distmeta.evaluation import evaluate

    report = evaluate(cfg, params)
    return {"acc": report.acc[-1], "ci95": report.acc_ci95[-1]}  # type: ignore[index]


def plain_meta_gradient(model, theta, batch, inner_lr: float, second_order: bool) -> None:
    """One SGD step on each task's support set, the mean query loss's gradient into
    ``theta[k].grad``: MAML (Finn et al. 2017, Eq. 2-3), or first order (Section 5.2)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    for t in range(batch.n_tasks):
        support = F.cross_entropy(functional_call(model, theta, (batch.support_x[t],)), batch.support_y[t])
        grads = torch.autograd.grad(support, list(theta.values()), create_graph=second_order)
        fast = {k: v - inner_lr * (g if second_order else g.detach()) for (k, v), g in zip(theta.items(), grads, strict=True)}
        query = F.cross_entropy(functional_call(model, fast, (batch.query_x[t],)), batch.query_y[t])
        (query / batch.n_tasks).backward()


def plain_loop(cfg, budget_s: float, threads: int) -> list[dict[str, Any]]:
    """MAML by hand, one task at a time; snapshots of theta every ``budget_s / 6``."""
    import torch

    from distmeta.runtime.server import lr_at
    from distmeta.tasks.sources import task_source

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = cfg.model.build()
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    opt = torch.optim.Adam(theta.values(), lr=cfg.outer.lr)
    source, rt, alg = task_source(cfg), cfg.runtime, cfg.algorithm
    start, snapshots, step, every = time.perf_counter(), [], 0, budget_s / 6
    while step < cfg.outer.steps and (elapsed := time.perf_counter() - start) < budget_s:
        if elapsed >= every * (len(snapshots) + 1):
            snapshots.append({"t_s": elapsed, "step": step, "params": {k: v.detach().clone() for k, v in theta.items()}})
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        second = step >= alg.first_order_steps
        plain_meta_gradient(model, theta, source.sample(rt.meta_batch, cfg.seed, step, 0), alg.inner_lr, second)
        opt.step()
        opt.zero_grad()
        step += 1
    snapshots.append({"t_s": time.perf_counter() - start, "step": step,
                      "params": {k: v.detach().clone() for k, v in theta.items()}})
    return snapshots


def distmeta_run(data: str, budget_s: float, run_dir: str, every: int = 1000,
                 overrides: list[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``distmeta train`` of the fast config (with ``overrides``) from the command line; each
    checkpoint's params, with its time since launch."""
    from distmeta.rundir.checkpoint import complete, load_checkpoint
    from distmeta.rundir.storage import RunDir

    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               MLFLOW_TRACKING_URI=f"sqlite:///{run_dir}-mlflow.db")
    cwd = os.path.dirname(os.path.abspath(run_dir))  # MLflow's sqlite store puts artifacts under ./mlruns
    launch = time.time()
    subprocess.run([sys.executable, "-m", "distmeta.cli", "train", CONFIG, "--run-dir", run_dir, "--no-eval",
                    f"data.path={data}", f"runtime.time_limit_s={budget_s}", "checkpoint.keep=100",
                    f"checkpoint.every={every}", *(overrides or [])],
                   check=True, env=env, stdout=subprocess.DEVNULL, cwd=cwd)
    rd = RunDir(run_dir)
    points = []
    for step in complete(rd):
        files = list(Path(run_dir, "checkpoints").glob(f"step-{step:08d}*"))
        points.append({"t_s": max(f.stat().st_mtime for f in files) - launch, "step": step,
                       "params": load_checkpoint(rd, step)["params"]})
    lines = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    return points, {"steps": lines[-1]["step"] + 1 if lines else 0}


def pack_omniglot(tmp: str) -> str:
    """Omniglot at 28 px, grey, as ``distmeta data pack`` writes it: its directory."""
    from distmeta.data.omniglot import omniglot_root

    data = f"{tmp}/omniglot"
    done = subprocess.run([sys.executable, "-m", "distmeta.cli", "data", "pack", "omniglot", "--root",
                           str(omniglot_root(None)), "--out", data, "--image-size", "28", "--channels", "1",
                           "--x-dtype", "uint8"], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"distmeta data pack omniglot failed: {last}")
    return data


def run(quick: bool, console: Console) -> dict[str, Any]:
    import torch

    budget = 90.0 if quick else 900.0
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-tta-") as tmp:
        data = pack_omniglot(tmp)
        cfg = config_for(data, budget)
        ours, info = distmeta_run(data, budget, f"{tmp}/run", every=100 if quick else 1000)
        loop = plain_loop(cfg, budget, torch.get_num_threads())
        rows = []
        for name, points in (("distmeta train", ours), ("plain per-task loop", loop)):
            for p in points:
                rows.append({"how": name, "t_s": p["t_s"], "step": p["step"], **score(cfg, p["params"])})
    print_table(console, f"tta: Omniglot 5-way 1-shot, {cfg.eval.episodes} test episodes, {cfg.eval.steps} inner steps",
                ["how", "time since launch s", "step", "test acc", "95% CI"],
                [[r["how"], f"{r['t_s']:.0f}", str(r["step"]), f"{100 * r['acc']:.2f}%", f"±{100 * r['ci95']:.2f}"]
                 for r in rows])
    plot(rows, "bench-tta.png")
    return {"budget_s": budget, "points": rows, "distmeta_steps": info["steps"], "plot": "bench-tta.png"}


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Accuracy (with its 95% CI) against minutes since launch, one line per way of training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for how in dict.fromkeys(r["how"] for r in rows):
        mine = [r for r in rows if r["how"] == how]
        ax.errorbar([r["t_s"] / 60 for r in mine], [100 * r["acc"] for r in mine],
                    yerr=[100 * r["ci95"] for r in mine], fmt="o-", capsize=2, markersize=4, label=how)
    ax.axhline(98, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("minutes since launch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
