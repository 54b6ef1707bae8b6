"""Section ``md``: Meta-Dataset's variable-way variable-shot episodes, side by side in one run.

* **Sampling against consumption**: episodes per second the official sampler draws from
  class shards (two sources of random 84x84 RGB classes written through the packer's writer,
  a bounded cache, as a worker reads them), against the episodes per second one ResNet-18
  ProtoNets meta-gradient consumes on this machine (the same episodes). Sampling must outrun
  the step, or the workers wait on the host.
* **Vectorised against the per-task loop** on the same variable-size meta-batches
  (:class:`~distmeta.types.EpisodeGroups`: same-layout tasks grouped, each group vectorised),
  fo-Proto-MAML on Conv4, the two paths' gradients checked equal before timing.

Episode sizes are capped (``max_ways_upper_bound``, ``max_support_set_size``) so that a
CPU-only machine finishes in minutes; the caps are in the results.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console

from benchmarks.report import fmt_ratio, print_table
from benchmarks.shards import pack_image_classes
from benchmarks.timing import load_average


def _family(paths: list[str], ways: int, support: int):
    from distmeta.data import ClassShards
    from distmeta.tasks.multi_source import MultiSourceEpisodes, SourcePool
    from distmeta.tasks.variable import EpisodeShape

    shape = EpisodeShape(max_ways_upper_bound=ways, max_support_set_size=support, max_num_query=5)
    return MultiSourceEpisodes(tuple(SourcePool(f"source{i}", ClassShards(p, "train", cache_mb=2048))
                                     for i, p in enumerate(paths)), shape)


def sample_rate(family, steps: int, tasks: int) -> dict[str, float]:
    family.sample(tasks, 0, 0, 0)  # index the shards
    start = time.perf_counter()
    sizes = []
    for step in range(1, steps + 1):
        batch = family.sample(tasks, 0, step, 0)
        sizes += [g.support_x.shape[1] + g.query_x.shape[1] for g in batch.groups for _ in range(g.n_tasks)]
    seconds = time.perf_counter() - start
    return {"episodes_per_s": steps * tasks / seconds, "images_per_episode": float(np.mean(sizes))}


def consume_rate(family, steps: int, tasks: int) -> dict[str, float]:
    from distmeta.algorithms import ProtoNet
    from distmeta.models import resnet18

    torch.manual_seed(0)
    model = resnet18(5, image_size=84)
    params = {k: v.detach() for k, v in model.named_parameters()}
    batches = [family.sample(tasks, 1, step, 0) for step in range(steps)]
    start = time.perf_counter()
    for b in batches:
        ProtoNet().meta_gradient(model, params, b, metrics=False)
    return {"episodes_per_s": steps * tasks / (time.perf_counter() - start)}


def vectorised_vs_loop(family, repeats: int, tasks: int) -> dict[str, Any]:
    from distmeta.algorithms import FOProtoMAML
    from distmeta.models import conv4

    torch.manual_seed(0)
    model = conv4(5, in_channels=3, image_size=84, hidden=32)
    params = {k: v.detach() for k, v in model.named_parameters()}
    batches = [family.sample(tasks, 2, step, 0) for step in range(repeats)]
    rules = {"vectorised": FOProtoMAML(inner_lr=0.01, inner_steps=2),
             "per-task loop": FOProtoMAML(inner_lr=0.01, inner_steps=2, vectorize=False)}
    a, b = (r.meta_gradient(model, params, batches[0]).grads for r in rules.values())
    error = max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-12)) for k in a)
    out: dict[str, Any] = {"max_relative_difference": error,
                           "groups_per_batch": float(np.mean([len(x.groups) for x in batches]))}
    for name, rule in rules.items():
        start = time.perf_counter()
        for x in batches:
            rule.meta_gradient(model, params, x, metrics=False)
        out[name] = {"tasks_per_s": repeats * tasks / (time.perf_counter() - start)}
    out["speedup"] = out["vectorised"]["tasks_per_s"] / out["per-task loop"]["tasks_per_s"]
    return out


def run(quick: bool, console: Console) -> dict[str, Any]:
    ways, support, tasks = (10, 50, 4) if quick else (20, 100, 8)
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-md-") as tmp:
        paths = [pack_image_classes(f"{tmp}/s{i}", 30, 40).path for i in range(2)]
        family = _family(paths, ways, support)
        result: dict[str, Any] = {"caps": {"max_ways_upper_bound": ways, "max_support_set_size": support,
                                           "max_num_query": 5}, "tasks_per_step": tasks}
        result["sample"] = sample_rate(family, 5 if quick else 20, tasks)
        result["consume_resnet18_protonet"] = consume_rate(family, 1 if quick else 3, tasks)
        result["sample_over_consume"] = (result["sample"]["episodes_per_s"]
                                         / result["consume_resnet18_protonet"]["episodes_per_s"])
        result["fo_proto_maml_conv4"] = vectorised_vs_loop(family, 2 if quick else 5, tasks)
    result["load_average"] = load_average()
    v = result["fo_proto_maml_conv4"]
    print_table(console, "Meta-Dataset episodes (one process, this machine)", ["measure", "value"], [
        ["episodes sampled / s", result["sample"]["episodes_per_s"]],
        ["images per episode", result["sample"]["images_per_episode"]],
        ["episodes / s a ResNet-18 ProtoNets step consumes", result["consume_resnet18_protonet"]["episodes_per_s"]],
        ["sampled over consumed", fmt_ratio(result["sample_over_consume"])],
        ["fo-Proto-MAML Conv4 vectorised, tasks / s", v["vectorised"]["tasks_per_s"]],
        ["fo-Proto-MAML Conv4 per-task loop, tasks / s", v["per-task loop"]["tasks_per_s"]],
        ["vectorised over loop", fmt_ratio(v["speedup"])],
        ["groups per meta-batch", v["groups_per_batch"]]])
    return result
