"""Section ``throughput``: meta-gradient tasks/s on one core, vectorised vs the per-task loop.

For MAML, FOMAML and iMAML on the sinusoid MLP and on the Omniglot Conv4, ``vectorize=True``
(the forward ``torch.func.vmap``-ed over tasks, derivatives by autograd) and ``vectorize=False``
(a Python loop over tasks, the way learn2learn and higher work) are timed side by side (interleaved repeats, one thread). For MAML the
anchor libraries (higher, learn2learn, TorchOpt) join the same interleaved timing, after
their gradients are checked against distmeta's (relative error of the summed gradient).

distmeta's ``meta_gradient`` also computes adaptation metrics (the query loss before and
the support loss after adaptation: two graph-free forward passes per task); the anchors
compute the gradient only, so the comparison is, if anything, tilted towards them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from benchmarks import anchors
from benchmarks.report import fmt_ratio, print_table
from benchmarks.timing import Timing, load_average, ratio, time_interleaved
from benchmarks.workloads import Workload, omniglot_conv4, sinusoid

log = logging.getLogger(__name__)
RULES = ("maml", "fomaml", "imaml")
PATHS = {"vectorized": True, "loop": False}


@dataclass(frozen=True)
class Plan:
    conv4_meta_batch: int
    sinusoid_repeats: int
    conv4_repeats: int
    conv4_anchors: bool
    check_tasks: int = 2  # tasks in the gradient check (and the Conv4 warm-up batch)


def make_plan(quick: bool) -> Plan:
    """Meta-batches and repeats: small in quick mode, the paper settings otherwise."""
    if quick:
        return Plan(conv4_meta_batch=2, sinusoid_repeats=2, conv4_repeats=1, conv4_anchors=False)
    return Plan(conv4_meta_batch=32, sinusoid_repeats=5, conv4_repeats=2, conv4_anchors=True)


def _tasks_per_s(w: Workload, timing: Timing) -> float:
    return w.meta_batch / timing.median_s


def anchor_calls(w: Workload, plan: Plan, reference: dict[str, Any]) -> tuple[dict, dict, dict]:
    """(timed calls, warm-up calls, findings) for the anchors that import and agree with
    distmeta's MAML gradient on ``plan.check_tasks`` tasks."""
    calls: dict[str, Any] = {}
    warm: dict[str, Any] = {}
    found: dict[str, Any] = {}
    hyper = w.hyper["maml"]
    check = w.batch.slice(0, min(plan.check_tasks, w.meta_batch))
    for name in anchors.IMPLEMENTATIONS:
        module, error = anchors.load(name)
        if module is None:
            found[name] = {"available": False, "error": error}
            continue
        info: dict[str, Any] = {"available": True, "version": anchors.version(module)}
        try:
            small = anchors.anchor_step(name, module, w.model, w.params(), check, hyper["inner_lr"], hyper["inner_steps"])
            got = small()
            info["rel_err_vs_loop"] = anchors.relative_error(got, reference["loop"])
            info["rel_err_vs_vectorized"] = anchors.relative_error(got, reference["vectorized"])
            calls[name] = anchors.anchor_step(name, module, w.model, w.params(), w.batch,
                                              hyper["inner_lr"], hyper["inner_steps"])
            warm[name] = small
        except Exception as exc:  # a library that runs but breaks on this torch is a finding
            log.warning("anchor %s failed on %s: %s", name, w.name, exc)
            info["error"] = f"{type(exc).__name__}: {exc}"
        found[name] = info
    return calls, warm, found


def reference_grads(w: Workload, plan: Plan) -> dict[str, Any]:
    """distmeta's MAML gradients on the check tasks, by both paths."""
    check = w.batch.slice(0, min(plan.check_tasks, w.meta_batch))
    return {path: w.rule("maml", vectorize=v).meta_gradient(w.model, w.params(), check).grads
            for path, v in PATHS.items()}


def measure_rule(w: Workload, rule: str, repeats: int, plan: Plan, with_anchors: bool) -> dict[str, Any]:
    """Tasks/s of both paths (and, for MAML, the anchors), interleaved."""
    warm_batch = w.batch if w.name == "sinusoid" else w.batch.slice(0, min(plan.check_tasks, w.meta_batch))
    calls = {path: w.meta_step(w.rule(rule, vectorize=v)) for path, v in PATHS.items()}
    warm = {path: w.meta_step(w.rule(rule, vectorize=v), warm_batch) for path, v in PATHS.items()}
    found: dict[str, Any] = {}
    if with_anchors:
        extra_calls, extra_warm, found = anchor_calls(w, plan, reference_grads(w, plan))
        calls |= extra_calls
        warm |= extra_warm
    timings = time_interleaved(calls, repeats, warmup=1, warmup_calls=warm)
    out: dict[str, Any] = {f"{path}_tasks_per_s": _tasks_per_s(w, timings[path]) for path in PATHS}
    out["ratio_vectorized_over_loop"] = ratio(out["vectorized_tasks_per_s"], out["loop_tasks_per_s"])
    out["timings"] = {name: t.to_dict() for name, t in timings.items()}
    for name, info in found.items():
        if name in timings:
            rate = _tasks_per_s(w, timings[name])
            info |= {"tasks_per_s": rate, "ratio_over_vectorized": ratio(rate, out["vectorized_tasks_per_s"]),
                     "ratio_over_loop": ratio(rate, out["loop_tasks_per_s"])}
    if with_anchors:
        out["anchors"] = found
    return out


def measure_workload(w: Workload, repeats: int, plan: Plan, with_anchors: bool) -> dict[str, Any]:
    """Every rule on one workload (anchors with MAML when asked)."""
    rules = {}
    for rule in RULES:
        log.info("throughput: %s %s", w.name, rule)
        rules[rule] = measure_rule(w, rule, repeats, plan, with_anchors and rule == "maml")
    result = w.describe() | {"repeats": repeats, "rules": rules, "load_average": load_average()}
    if not with_anchors:
        result["anchors_skipped"] = "quick mode: anchors are timed on the sinusoid only"
    return result


def print_results(console: Console, result: dict[str, Any]) -> None:
    """The section's tables: vectorised vs loop, then MAML through the anchors."""
    rows = []
    for name, w in result["workloads"].items():
        for rule, r in w["rules"].items():
            rows.append([f"{name} (T={w['meta_batch']})", rule, r["vectorized_tasks_per_s"], r["loop_tasks_per_s"],
                         fmt_ratio(r["ratio_vectorized_over_loop"])])
    print_table(console, "throughput: meta-gradient tasks/s, one core", ["workload", "rule", "vmap tasks/s",
                "loop tasks/s", "vmap / loop"], rows)
    rows = []
    for name, w in result["workloads"].items():
        maml = w["rules"]["maml"]
        for lib, a in maml.get("anchors", {}).items():
            if not a.get("tasks_per_s"):
                rows.append([name, lib, "-", "-", "-", "-", str(a.get("error", "?"))[:60]])
                continue
            rows.append([name, f"{lib} {a['version']}", f"{a['rel_err_vs_loop']:.1e}", a["tasks_per_s"],
                         fmt_ratio(a["ratio_over_vectorized"]), fmt_ratio(a["ratio_over_loop"]), ""])
    if rows:
        print_table(console, "throughput: MAML through the anchor libraries (same gradient, same timing rounds)",
                    ["workload", "library", "rel err", "tasks/s", "/ distmeta vmap", "/ distmeta loop", "note"], rows)


def run(quick: bool, console: Console) -> dict[str, Any]:
    """The section's results (JSON-able); prints its tables."""
    plan = make_plan(quick)
    workloads = {
        "sinusoid": measure_workload(sinusoid(), plan.sinusoid_repeats, plan, True),
        "conv4": measure_workload(omniglot_conv4(plan.conv4_meta_batch), plan.conv4_repeats, plan,
                                  plan.conv4_anchors),
    }
    result = {"threads": 1, "anchors_dir": anchors.anchors_dir(), "anchors_install": anchors.INSTALL_NOTE,
              "workloads": workloads,
              "note": "distmeta's meta_gradient also computes adaptation metrics (two graph-free forward "
                      "passes per task); the anchors compute the gradient only"}
    print_results(console, result)
    return result
