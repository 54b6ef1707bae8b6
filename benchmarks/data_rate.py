"""Section ``data``: can one reader process feed a training core with fresh 84-px tasks?

Classes of random 84x84 RGB images (mini-ImageNet's shape; see :mod:`benchmarks.shards`)
are packed as class shards, then tasks are sampled from them by one process, as a worker
does at every step (:class:`distmeta.tasks.ImageClasses` over :class:`distmeta.data.ClassShards`):
5-way 1-shot, 15 queries per class, meta-batches of 4 (MAML's mini-ImageNet setting):

* time to the first batch from a cold start: from opening the dataset to the first
  ``EpisodeBatch``, which includes checking every shard file of the split (sha256, tar
  structure, every class record), since any task may draw any class;
* episodes/s sampled: cold (the image cache empty: every image a ranged read) and warm
  (the whole split in the cache);
* episodes/s consumed by a training step: Conv4 (32 filters, max-pool, 84 px) MAML with 5
  inner steps at lr 0.01 (Finn et al. 2017's mini-ImageNet setting), a per-task loop (faster
  than ``vmap`` for Conv4 on CPU), one core.

The ratio sampled/consumed is how many one-core training workers one reader process keeps busy.
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any

import torch
from rich.console import Console

from benchmarks.report import fmt_ratio, print_table
from benchmarks.shards import pack_image_classes
from benchmarks.timing import load_average, ratio, time_call
from benchmarks.workloads import Workload
from distmeta.data import ClassShards
from distmeta.models import conv4
from distmeta.tasks import ImageClasses

log = logging.getLogger(__name__)
META_BATCH = 4
SHAPE = {"way": 5, "shot": 1, "query": 15}


def first_batch_s(path: str) -> float:
    """Seconds from opening the dataset to the first meta-batch."""
    start = time.perf_counter()
    tasks = ImageClasses(ClassShards(path, "train"), **SHAPE)
    tasks.sample(META_BATCH, 0, 0, 0)
    return time.perf_counter() - start


def sample_rates(path: str, steps: int, cache_mb: float) -> dict[str, Any]:
    """Episodes/s with an empty cache (``cache_mb=0``: every image read) or a warm one."""
    pool = ClassShards(path, "train", cache_mb=cache_mb)
    tasks = ImageClasses(pool, **SHAPE)
    tasks.sample(META_BATCH, 0, 0, 0)  # index the files
    if cache_mb:
        for c in range(pool.n_classes):
            pool.images(c, range(int(pool.counts()[c])))  # every image cached
    start = time.perf_counter()
    for step in range(1, steps + 1):
        tasks.sample(META_BATCH, 0, step, 0)
    seconds = time.perf_counter() - start
    return {"episodes": steps * META_BATCH, "seconds": seconds, "episodes_per_s": steps * META_BATCH / seconds,
            "bytes_read": pool.stats.bytes}


def consume_rate(path: str, repeats: int) -> dict[str, Any]:
    """Tasks/s of Conv4 MAML at 84 px (per-task loop, one core) on a meta-batch from the shards."""
    torch.manual_seed(0)
    batch = ImageClasses(ClassShards(path, "train"), **SHAPE).sample(META_BATCH, 0, 0, 0)
    hyper = {"maml": {"inner_lr": 0.01, "inner_steps": 5}}
    w = Workload("conv4-84", "Conv4 (32 filters, max) 5-way 1-shot 84x84",
                 conv4(5, in_channels=3, image_size=84, hidden=32, pool="max"), batch, hyper)
    rule = w.rule("maml", vectorize=False)
    timing = time_call(w.meta_step(rule, batch), repeats=repeats, warmup=1,
                       warmup_fn=w.meta_step(rule, batch.slice(0, 1)))
    return {"meta_batch": META_BATCH, "rule": "maml", "vectorize": False, "hyper": hyper["maml"],
            "tasks_per_s": META_BATCH / timing.median_s, **timing.to_dict()}


def print_results(console: Console, r: dict[str, Any]) -> None:
    """The section's table: rates, first-batch time and the sampled/consumed ratios."""
    s = r["shards"]
    rows = [
        [f"pack ({s['classes']} classes, {s['images']} images)", f"{s['pack_images_per_s']:.0f} images/s", s["pack_s"]],
        [f"first batch, cold start ({s['files']} files, {s['bytes'] / 2**20:.0f} MiB checked)", "-", r["first_batch_s"]],
        ["sample, cold cache", r["sample"]["cold"]["episodes_per_s"], r["sample"]["cold"]["seconds"]],
        ["sample, warm cache", r["sample"]["warm"]["episodes_per_s"], r["sample"]["warm"]["seconds"]],
        [f"consumed: Conv4 MAML 84px, 5 inner steps (T={r['consume']['meta_batch']})",
         r["consume"]["tasks_per_s"], r["consume"]["median_s"]],
        ["ratio sampled (cold) / consumed", fmt_ratio(r["ratio_cold_over_consumed"]), "-"],
        ["ratio sampled (warm) / consumed", fmt_ratio(r["ratio_warm_over_consumed"]), "-"],
    ]
    print_table(console, "data: fresh 5-way 1-shot 84-px episodes from class shards (one process) vs a training core",
                ["what", "episodes/s", "seconds"], rows)


def run(quick: bool, console: Console) -> dict[str, Any]:
    """The section's results (JSON-able); prints its table."""
    classes, images, steps = (16, 40, 10) if quick else (64, 120, 100)
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-data-") as tmp:
        packed = pack_image_classes(f"{tmp}/shards", classes, images)
        result: dict[str, Any] = {"shards": packed.to_dict() | {"path": None}, "meta_batch": META_BATCH, **SHAPE}
        result["first_batch_s"] = first_batch_s(packed.path)
        result["sample"] = {"cold": sample_rates(packed.path, steps, 0.0),
                            "warm": sample_rates(packed.path, steps, 4096.0)}
        result["consume"] = consume_rate(packed.path, 1 if quick else 3)
    consumed = result["consume"]["tasks_per_s"]
    result["ratio_cold_over_consumed"] = ratio(result["sample"]["cold"]["episodes_per_s"], consumed)
    result["ratio_warm_over_consumed"] = ratio(result["sample"]["warm"]["episodes_per_s"], consumed)
    result["load_average"] = load_average()
    print_results(console, result)
    return result
