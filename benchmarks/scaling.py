"""Section ``scaling``: tasks/s of the real runtime with 1..N workers, and the server's share.

``distmeta.runtime.run.train`` runs one config (``configs/omniglot_5w1s_maml.yaml``'s
network and rule: Conv4 MAML 5-way 1-shot from packed shards, meta-batch 32, 8 logical shards) with 1 and 2 workers on a local Ray instance, then on a
``ray.cluster_utils.Cluster`` of 1..4 fake nodes (``num_cpus=1`` each, all on loopback; the
head has no CPUs and holds the driver and the parameter server). Per step the runtime
reports ``step_s``, ``compute_s`` (slowest worker) and ``server_s`` (the server's ``apply``);
the rest of a step is dispatch and object-store transfer. The first steps (actor start-up,
first file checks) are left out of the medians.

This machine has 2 physical cores: beyond 2 workers the fake nodes share them, so tasks/s
cannot keep growing there; that is the machine, not the runtime. The cost-model constants
(server work per float, transfer bandwidth) are measured here too; see ``COST_MODEL.md``.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from benchmarks import cost_model, server_cost
from benchmarks.report import fmt_ratio, print_table
from benchmarks.shards import pack_bench_shards
from benchmarks.timing import load_average, ratio

log = logging.getLogger(__name__)
STORE_BYTES = 200 * 2**20
PHYSICAL_CORES_NOTE = (f"this machine has {os.cpu_count()} CPU core(s): runs with more workers than cores "
                       "share them, so their tasks/s cannot scale")

CONSTANT_LABELS = {
    "P": "P: parameters (Conv4 5-way)", "R": "R: logical shards",
    "c": "c: compute s per task, one core (local, 1 worker)", "L": "L: fixed per-step latency s (local, 1 worker)",
    "s": "s: server s per float summed", "o": "o: server s per parameter (norm + Adam)",
    "B_same_node": "B: object store bytes/s, same node", "B_across_nodes": "B: bytes/s across loopback nodes",
    "server_fit_max_rel_residual": "server fit: max relative residual",
    "server_s_predicted": "server s per step: predicted", "server_s_measured_1_worker": "server s per step: measured",
}


@dataclass(frozen=True)
class Plan:
    steps: int
    skip: int
    nodes: tuple[int, ...]
    meta_batch: int = 32
    shards: int = 8
    query: int = 1


def make_plan(quick: bool) -> Plan:
    return Plan(steps=3, skip=1, nodes=(2,)) if quick else Plan(steps=12, skip=2, nodes=(1, 2, 3, 4))


def overrides(plan: Plan, data_path: str, workers: int) -> list[str]:
    """Config overrides of the scaling run (Conv4 MAML 5-way 1-shot from the packed shards)."""
    return [f"data.path={data_path}", "task.family=images", "task.way=5", "task.shot=1",
            f"task.query={plan.query}", "model.name=conv4", "model.n_way=5", "model.pool=stride",
            "algorithm.name=maml", "algorithm.inner_lr=0.4", "algorithm.inner_steps=1", "algorithm.vectorize=true",
            f"outer.steps={plan.steps}", f"runtime.meta_batch={plan.meta_batch}",
            f"runtime.logical_shards={plan.shards}", f"runtime.workers={workers}", "runtime.cpus_per_worker=1",
            "runtime.threads_per_worker=1", "tracking.enabled=false", "checkpoint.every=1000000"]


def summarize(history: list[tuple[int, dict[str, float]]], skip: int, meta_batch: int) -> dict[str, Any]:
    """Medians of the per-step timings after the first ``skip`` steps, and the shares."""
    kept = [m for _, m in history[skip:]] or [m for _, m in history]
    med = {k: statistics.median(m[k] for m in kept) for k in ("step_s", "compute_s", "server_s")}
    other = max(med["step_s"] - med["compute_s"] - med["server_s"], 0.0)
    return med | {"other_s": other, "tasks_per_s": meta_batch / med["step_s"], "steps_used": len(kept),
                  "server_share": med["server_s"] / med["step_s"], "compute_share": med["compute_s"] / med["step_s"],
                  "other_share": other / med["step_s"]}


def train_once(plan: Plan, data_path: str, workers: int, tmp: str, tag: str) -> dict[str, Any]:
    """One real training run; its per-step timings summarised."""
    from distmeta.config import load_config
    from distmeta.runtime.run import train

    cfg = load_config(None, overrides(plan, data_path, workers))
    result = train(cfg, run_dir=f"{tmp}/{tag}-w{workers}", evaluate_at_end=False)
    return {"workers": workers, "wall_s": result.wall_s, "first_step_s": result.first_step_s,
            **summarize(result.history, plan.skip, plan.meta_batch)}


def ray_env() -> None:
    """Loopback-only Ray without usage stats; must run before ``import ray``."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@contextmanager
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs on loopback, shut down after the block."""
    ray_env()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, dashboard_host="127.0.0.1",
             object_store_memory=STORE_BYTES, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def fake_cluster(n_nodes: int) -> Iterator[Any]:
    """A head with no CPUs plus ``n_nodes`` one-CPU nodes, all on loopback; torn down after."""
    ray_env()
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": STORE_BYTES, "include_dashboard": False})
    try:
        for _ in range(n_nodes):
            cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def loopback_only() -> bool:
    """Whether every live Ray node is bound to 127.0.0.1."""
    import ray

    return all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes() if n.get("Alive"))


def remote_probe_options(cluster: Any) -> dict[str, Any]:
    """Actor options that place the transfer probe on a worker node (not the driver's)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = next(iter(cluster.worker_nodes))
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False)}


def run_local(plan: Plan, data: str, tmp: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Train with 1 and 2 workers on a local Ray; transfer probe on the same node."""
    with local_ray():
        runs = {str(w): train_once(plan, data, w, tmp, "local") for w in (1, 2)}
        transfer = server_cost.transfer_rate(sizes, repeats=3)
        loopback = loopback_only()
    return {"runs": runs, "transfer_same_node": transfer, "loopback_only": loopback}


def run_cluster(plan: Plan, data: str, tmp: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Train on fake clusters of each size in the plan; transfer probe across nodes on the 2-node one."""
    runs: dict[str, Any] = {}
    transfer = None
    for n in plan.nodes:
        log.info("scaling: fake cluster with %d node(s)", n)
        with fake_cluster(n) as cluster:
            if n == 2:
                transfer = server_cost.transfer_rate(sizes, repeats=3, actor_options=remote_probe_options(cluster))
            runs[str(n)] = train_once(plan, data, n, tmp, f"cluster{n}") | {"loopback_only": loopback_only()}
    return {"runs": runs, "transfer_across_nodes": transfer}


def add_speedups(runs: dict[str, Any], base: float) -> None:
    """Each run's tasks/s over ``base`` (the local one-worker run's)."""
    for r in runs.values():
        r["speedup_vs_local_1"] = ratio(r["tasks_per_s"], base)


def print_results(console: Console, result: dict[str, Any]) -> None:
    """The section's tables: runs (tasks/s, shares) and the cost model's constants and checks."""
    rows = []
    for where, block in (("local Ray", result["local"]), ("fake cluster", result["cluster"])):
        for n, r in block["runs"].items():
            rows.append([where, n, r["tasks_per_s"], fmt_ratio(r["speedup_vs_local_1"]), f"{r['step_s']:.3f}",
                         f"{100 * r['compute_share']:.1f}%", f"{100 * r['server_share']:.2f}%",
                         f"{100 * r['other_share']:.1f}%"])
    plan = result["plan"]
    print_table(console, f"scaling: real runtime, Conv4 MAML 5w1s (query {plan['query']}), "
                f"meta-batch {plan['meta_batch']}, {plan['shards']} logical shards",
                ["where", "workers", "tasks/s", "vs local 1", "step s", "compute", "server", "other"], rows,
                caption=f"{PHYSICAL_CORES_NOTE}; 1-min load average at the end: {result['load_average']}")
    m = result["cost_model"]
    rows = [[CONSTANT_LABELS.get(k, k), "-" if v is None else f"{v:.3g}"] for k, v in m["constants"].items()]
    rows += [[f"step s {k}: predicted / measured", f"{v['predicted_step_s']:.3f} / {v['measured_step_s']:.3f}"]
             for k, v in m["predictions"].items()]
    rows += [[k, f"{v:.3g}"] for k, v in m["scenarios"].items()]
    print_table(console, "scaling: cost model (COST_MODEL.md): constants, predictions, scenarios",
                ["quantity", "value"], rows)


def run(quick: bool, console: Console) -> dict[str, Any]:
    """The section's results (JSON-able); prints its tables."""
    plan = make_plan(quick)
    sizes = (10**5, 10**6) if quick else (10**5, 10**6, 10**7)
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-scaling-") as tmp:
        packed = pack_bench_shards(f"{tmp}/shards")
        local = run_local(plan, packed.path, tmp, sizes)
        cluster = run_cluster(plan, packed.path, tmp, sizes)
    for block in (local, cluster):
        add_speedups(block["runs"], local["runs"]["1"]["tasks_per_s"])
    result = {"plan": plan.__dict__ | {"nodes": list(plan.nodes)}, "shards": packed.to_dict() | {"path": None},
              "cores": os.cpu_count(), "note": PHYSICAL_CORES_NOTE, "local": local, "cluster": cluster,
              "load_average": load_average()}
    result["cost_model"] = cost_model.check_model(result, server_cost.server_model(quick))
    print_results(console, result)
    return result
