"""Section ``runtime``: what the distributed runtime costs over one process running the same rule.

Side by side in one run, on the default experiment (``configs/sinusoid_maml.yaml``: MAML on
sinusoid regression, meta-batch 24, 4 logical shards; tracking, evaluation and checkpoints off):

- **in process**, one thread, no Ray: the rule on the whole meta-batch in one call, then the
  server's Adam step (the baseline; metrics on the logged steps only, like ``train``); and the runtime's own work without Ray (the same plain
  classes: ``MetaWorker.compute``, one ``meta_gradient`` call per logical shard, then
  ``ParameterServer.apply``), which shows what the per-shard calls cost by themselves;
- **distmeta train** on a local Ray with 1 and 2 workers, pipelined (``runtime.max_lag``
  steps ahead, the default) and not (``max_lag=0``: the driver waits for every step);
- **overhead**: median step time minus median compute time of the slowest worker.

Then the server's input per step on a fake cluster of 4 nodes with 2 workers each
(``ray.cluster_utils.Cluster``, loopback), with and without node aggregation, in units of P
(the parameter count): one gradient per logical shard was the old protocol (R x P).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from typing import Any

from rich.console import Console

from benchmarks.report import fmt_ratio, print_table
from benchmarks.scaling import fake_cluster, local_ray
from benchmarks.timing import ratio

log = logging.getLogger(__name__)
CONFIG = "configs/sinusoid_maml.yaml"
QUIET = ["tracking.enabled=false", "checkpoint.every=1000000"]


def _config(steps: int, *extra: str):
    from distmeta.config import load_config

    return load_config(CONFIG, [f"outer.steps={steps}", *QUIET, *extra])


def in_process(steps: int, tmp: str, full_batch: bool) -> dict[str, Any]:
    """The rule and Adam in one process, one thread, no Ray: either the whole meta-batch in one
    ``meta_gradient`` call (what a one-process user writes), or the runtime's own work, one call
    per logical shard and the tree sum (``MetaWorker.compute`` on all shards)."""
    import torch

    from distmeta.runtime.server import ParameterServer
    from distmeta.runtime.worker import MetaWorker

    cfg = _config(steps, "runtime.workers=1").to_dict()
    server, worker = ParameterServer(cfg, f"{tmp}/in-process-{full_batch}"), MetaWorker(cfg)
    rt = worker.cfg.runtime
    shards = list(range(rt.logical_shards))
    torch.set_num_threads(1)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        logged = step % worker.cfg.tracking.log_every == 0  # metrics on the logged steps, as train does
        if full_batch:
            batch = worker.source.sample(rt.meta_batch, worker.cfg.seed, step, 0)
            mg = worker.rule.meta_gradient(worker.model, server.get()[1], batch, step, logged)
            server.apply(step, [(0, rt.logical_shards, mg.grads, mg.n_tasks)])
        else:
            out = worker.compute(step, shards, server.get(), report=logged)
            server.apply(step, *out[1:])
        times.append(time.perf_counter() - t0)
    kept = times[steps // 10:]
    return {"tasks_per_s": rt.meta_batch * len(kept) / sum(kept), "step_s": statistics.median(kept)}


def call_cost(reps: int) -> list[dict[str, Any]]:
    """Median time of one ``meta_gradient`` call on the sinusoid MLP, one thread: 6 tasks (a
    logical shard of the default config) and 24 (its meta-batch), under ``vmap`` with the
    metrics (what every step paid before) and the task-batched forward without them (a step
    that is not logged); the fixed cost per call is where the line through the two sizes
    meets 0 tasks."""
    import torch

    from distmeta.models import batched
    from distmeta.runtime.worker import MetaWorker

    torch.set_num_threads(1)
    worker = MetaWorker(_config(1, "runtime.workers=1").to_dict())
    params = worker.rule.init_params(worker.model)
    rows = []
    for path, metrics in (("vmap, metrics every step", True), ("task-batched, no metrics", False)):
        batched.ENABLED = path.startswith("task")
        try:
            ms = {}
            for n in (6, 24):
                batch = worker.source.sample(n, 0, 0, 0)
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    worker.rule.meta_gradient(worker.model, params, batch, 0, metrics)
                    times.append(time.perf_counter() - t0)
                ms[n] = 1000 * statistics.median(times[reps // 10:])
        finally:
            batched.ENABLED = True
        per_task = (ms[24] - ms[6]) / 18
        rows.append({"path": path, "ms_6": ms[6], "ms_24": ms[24], "fixed_ms": ms[6] - 6 * per_task})
    return rows


def distributed(steps: int, tmp: str, workers: int, max_lag: int) -> dict[str, Any]:
    """``train`` on the local Ray: tasks/s over the steady steps, median step and compute."""
    from distmeta.runtime.run import train

    cfg = _config(steps, f"runtime.workers={workers}", f"runtime.max_lag={max_lag}")
    result = train(cfg, run_dir=f"{tmp}/w{workers}-lag{max_lag}", evaluate_at_end=False)
    kept = [m for _, m in result.history[steps // 10:]]
    step_s = statistics.median(m["step_s"] for m in kept)
    compute_s = statistics.median(m["compute_s"] for m in kept)
    return {"workers": workers, "max_lag": max_lag, "step_s": step_s, "compute_s": compute_s,
            "overhead_s": step_s - compute_s, "first_step_s": result.first_step_s,
            "tasks_per_s": cfg.runtime.meta_batch * len(kept) / sum(m["step_s"] for m in kept)}


def server_input(tmp: str, steps: int) -> dict[str, Any]:
    """Floats into the server(s) per step on 4 fake nodes x 2 workers, in units of P."""
    from distmeta.rundir.model_init import initial_params
    from distmeta.runtime.run import train

    out: dict[str, Any] = {"nodes": 4, "workers": 8, "logical_shards": 8}
    with fake_cluster(4):
        for aggregate in (False, True):
            cfg = _config(steps, "runtime.workers=8", "runtime.cpus_per_worker=0.5", "runtime.logical_shards=8",
                          "runtime.meta_batch=24", f"runtime.node_aggregation={str(aggregate).lower()}")
            p = sum(v.numel() for v in initial_params(cfg).values())
            result = train(cfg, run_dir=f"{tmp}/agg-{aggregate}", evaluate_at_end=False)
            floats = statistics.median(m["server_in_floats"] for _, m in result.history)
            out["aggregated" if aggregate else "per_worker"] = floats / p
            out["P"] = p
    out["per_logical_shard"] = 8.0
    return out


def run(quick: bool, console: Console) -> dict[str, Any]:
    steps = 100 if quick else 400
    calls = call_cost(100 if quick else 400)
    print_table(console, "runtime: one meta_gradient call, sinusoid MLP, one thread",
                ["path", "6 tasks ms", "24 tasks ms", "fixed ms per call"],
                [[c["path"], f"{c['ms_6']:.2f}", f"{c['ms_24']:.2f}", f"{c['fixed_ms']:.2f}"] for c in calls])
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-runtime-") as tmp:
        base = in_process(steps, tmp, full_batch=True)
        per_shard = in_process(steps, tmp, full_batch=False)
        with local_ray():
            runs = [distributed(steps, tmp, w, lag) for w, lag in ((1, 2), (2, 2), (2, 0))]
        tree = server_input(tmp, 4 if quick else 8)
    for r in runs:
        r["vs_in_process"] = ratio(r["tasks_per_s"], base["tasks_per_s"])
    per_shard["vs_in_process"] = ratio(per_shard["tasks_per_s"], base["tasks_per_s"])
    rows = [["in process, one thread, no Ray, one call", "-", "-", f"{base['tasks_per_s']:.0f}", "1.00x",
             f"{1000 * base['step_s']:.2f}", "-", "-"],
            ["in process, one thread, no Ray, a call per shard", "-", "-", f"{per_shard['tasks_per_s']:.0f}",
             fmt_ratio(per_shard["vs_in_process"]), f"{1000 * per_shard['step_s']:.2f}", "-", "-"]]
    rows += [[f"distmeta train, {r['workers']} worker(s)", str(r["workers"]), str(r["max_lag"]), f"{r['tasks_per_s']:.0f}",
              fmt_ratio(r["vs_in_process"]), f"{1000 * r['step_s']:.2f}", f"{1000 * r['compute_s']:.2f}",
              f"{1000 * r['overhead_s']:.2f}"] for r in runs]
    print_table(console, f"runtime: default sinusoid config, {steps} steps, side by side",
                ["how", "workers", "max_lag", "tasks/s", "vs in process", "step ms", "compute ms", "overhead ms"], rows)
    print_table(console, "runtime: floats into the server per step, 4 fake nodes x 2 workers, 8 logical shards",
                ["protocol", "floats / P"],
                [["one gradient per logical shard (before the tree)", f"{tree['per_logical_shard']:.1f}"],
                 ["tree, pre-summed per worker", f"{tree['per_worker']:.1f}"],
                 ["tree + node aggregation", f"{tree['aggregated']:.1f}"]])
    return {"steps": steps, "calls": calls, "in_process": base, "in_process_per_shard": per_shard, "runs": runs,
            "server_input": tree}
