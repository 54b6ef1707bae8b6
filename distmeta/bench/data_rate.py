"""Section ``data``: can one reader process feed a training core?

Episodes are packed into webdataset shards (Omniglot 5-way 1-shot when its files are found,
random 8-bit images of the same shape otherwise; see :mod:`distmeta.bench.shards`), then read
back by :class:`distmeta.data.ShardEpisodeSource` in one process, meta-batches of 32:

* time to first batch: from opening the dataset to the first ``EpisodeBatch`` (it includes
  checking every shard file that batch touches: sha256, tar structure, shapes), for one
  logical shard (every file) and for logical shard 0 of 8 (what one worker of the Omniglot
  config sees);
* episodes/s over the first epoch (files checked as they are first used) and over a second
  epoch (all files checked already);
* episodes/s a training step consumes: ``configs/omniglot_5w1s_maml.yaml``'s Conv4 MAML
  5-way 1-shot (one query per class), meta-batch 32, vectorised, one core.

The ratio read/consumed is how many one-core training workers one reader process keeps busy.
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any

from rich.console import Console

from distmeta.bench.report import fmt_ratio, print_table
from distmeta.bench.shards import pack_bench_shards
from distmeta.bench.timing import load_average, ratio, time_call
from distmeta.bench.workloads import omniglot_conv4
from distmeta.data import ShardEpisodeSource

log = logging.getLogger(__name__)
META_BATCH = 32
CONFIG_SHARDS = 8


def first_batch_s(path: str, n_logical_shards: int) -> float:
    """Seconds from opening the dataset to logical shard 0's first meta-batch."""
    start = time.perf_counter()
    source = ShardEpisodeSource(path, "train", seed=0, n_logical_shards=n_logical_shards)
    source.sample(META_BATCH, 0, 0, 0)
    seconds = time.perf_counter() - start
    source.close()
    return seconds


def epoch_rates(path: str, episodes: int) -> dict[str, Any]:
    """Episodes/s over a cold first epoch and a warm second one (one logical shard)."""
    source = ShardEpisodeSource(path, "train", seed=0, n_logical_shards=1)
    steps = max(episodes // META_BATCH, 1)
    rates = {}
    for epoch, name in enumerate(("cold_epoch", "warm_epoch")):
        start = time.perf_counter()
        for step in range(epoch * steps, (epoch + 1) * steps):
            source.sample(META_BATCH, 0, step, 0)
        seconds = time.perf_counter() - start
        rates[name] = {"episodes": steps * META_BATCH, "seconds": seconds,
                       "episodes_per_s": steps * META_BATCH / seconds}
    stats = source.stats
    rates["read_stats"] = {"files_indexed": stats.files_indexed, "bytes_indexed": stats.bytes_indexed,
                           "index_seconds": stats.index_seconds}
    source.close()
    return rates


def consume_rate(path: str, meta_batch: int, repeats: int) -> dict[str, Any]:
    """Tasks/s of Conv4 MAML (vectorised, one core) on a meta-batch read from the shards."""
    w = omniglot_conv4(meta_batch=meta_batch)
    batch = ShardEpisodeSource(path, "train", seed=0, n_logical_shards=1).sample(meta_batch, 0, 0, 0)
    rule = w.rule("maml", vectorize=True)
    timing = time_call(w.meta_step(rule, batch), repeats=repeats, warmup=1,
                       warmup_fn=w.meta_step(rule, batch.slice(0, min(2, meta_batch))))
    return {"meta_batch": meta_batch, "rule": "maml", "vectorize": True, "hyper": w.hyper["maml"],
            "tasks_per_s": meta_batch / timing.median_s, **timing.to_dict()}


def print_results(console: Console, r: dict[str, Any]) -> None:
    """The section's table: rates, first-batch times and the read/consume ratios."""
    rows = [
        ["pack (write shards)", r["shards"]["pack_episodes_per_s"], "-"],
        [f"first batch, 1 logical shard ({r['shards']['files']} files)", "-", r["first_batch_s"]["1_shard"]],
        [f"first batch, shard 0 of {CONFIG_SHARDS}", "-", r["first_batch_s"][f"{CONFIG_SHARDS}_shards"]],
        ["read, cold epoch", r["read"]["cold_epoch"]["episodes_per_s"], r["read"]["cold_epoch"]["seconds"]],
        ["read, warm epoch", r["read"]["warm_epoch"]["episodes_per_s"], r["read"]["warm_epoch"]["seconds"]],
        [f"consumed: Conv4 MAML vmap (T={r['consume']['meta_batch']})", r["consume"]["tasks_per_s"],
         r["consume"]["median_s"]],
        ["ratio read (warm) / consumed", fmt_ratio(r["ratio_read_over_consumed"]), "-"],
        ["ratio read (cold) / consumed", fmt_ratio(r["ratio_cold_read_over_consumed"]), "-"],
    ]
    print_table(console, f"data: episodes from packed shards ({r['shards']['source']}, one process) vs a training core",
                ["what", "episodes/s", "seconds"], rows)


def run(quick: bool, console: Console) -> dict[str, Any]:
    """The section's results (JSON-able); prints its table."""
    episodes = 320 if quick else 3200
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-data-") as tmp:
        packed = pack_bench_shards(f"{tmp}/shards", episodes, maxcount=10 if quick else 100)
        result: dict[str, Any] = {"shards": packed.to_dict() | {"path": None}, "meta_batch": META_BATCH}
        result["first_batch_s"] = {"1_shard": first_batch_s(packed.path, 1),
                                   f"{CONFIG_SHARDS}_shards": first_batch_s(packed.path, CONFIG_SHARDS)}
        result["read"] = epoch_rates(packed.path, episodes)
        result["consume"] = consume_rate(packed.path, 4 if quick else META_BATCH, 1 if quick else 2)
    consumed = result["consume"]["tasks_per_s"]
    result["ratio_read_over_consumed"] = ratio(result["read"]["warm_epoch"]["episodes_per_s"], consumed)
    result["ratio_cold_read_over_consumed"] = ratio(result["read"]["cold_epoch"]["episodes_per_s"], consumed)
    result["load_average"] = load_average()
    print_results(console, result)
    return result
