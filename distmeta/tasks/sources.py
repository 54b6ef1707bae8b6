"""Where a run's tasks come from: packed shards (``data.path``) or a task family directly.

Every source has the same interface, ``sample(n_tasks, seed, step, shard) -> EpisodeBatch``,
a pure function of its arguments. Image tasks (``omniglot``, ``images``) are sampled fresh at
every step from the split's whole class pool (class shards, or Omniglot arrays in memory).
Evaluation draws held-out tasks: a fixed numbered set of image episodes, a packed pool's
episodes in order, or fresh procedural tasks from a seed stream that training never uses.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distmeta import plugins
from distmeta.config import IMAGE_FAMILIES, MD_FAMILY, RunConfig
from distmeta.data import (
    OMNIGLOT_ENV,
    ClassShards,
    Manifest,
    ManifestError,
    ShardEpisodeSource,
    iter_episodes,
    omniglot_classes,
    omniglot_root,
)
from distmeta.data.writer import split_stream
from distmeta.errors import ConfigError, NotFound
from distmeta.tasks.augment import Augment
from distmeta.tasks.images import ImageClasses
from distmeta.tasks.multi_source import MultiSourceEpisodes, SourcePool
from distmeta.tasks.registry import build_task
from distmeta.tasks.variable import EpisodeShape
from distmeta.types import EpisodeBatch, EpisodeGroups
from distmeta.uri import is_uri

EVAL_SEED_OFFSET = 1_000_003
"""Procedural evaluation tasks use ``seed + EVAL_SEED_OFFSET``: a stream training never draws."""

EVAL_STREAMS = {"test": 0, "val": 1}
"""Procedural held-out tasks: each split draws its own stream, so tuning on ``val`` never
sees the ``test`` tasks."""


def _episode_shards(cfg: RunConfig, split: str, n_logical_shards: int):
    source = ShardEpisodeSource(cfg.data.path, split=split, seed=cfg.seed,  # type: ignore[arg-type]
                                n_logical_shards=n_logical_shards, on_error=cfg.data.on_error)
    expected = {k: v for k, v in cfg.task.kwargs.items() if k in ("shots", "query")}
    source.check_compatible(family=cfg.task.family, **expected)
    return source


@functools.lru_cache(maxsize=8)
def _shards(path: str, split: str, on_error: str, cache_mb: float, digest: str):
    """One :class:`ClassShards` per data set version (``digest``) and split in this process, so
    repeated evaluations check the split's files once, not at every call."""
    return ClassShards(path, split, on_error=on_error, cache_mb=cache_mb)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=2)
def _omniglot_pools(root: str, image_size: int):
    return omniglot_classes(root, image_size=image_size)


def _class_pool(cfg: RunConfig, split: str):
    """The split's classes: class shards at ``data.path``, or Omniglot arrays in memory (each
    loaded once per process)."""
    if cfg.data.path:
        digest = Manifest.read(cfg.data.path).digest
        pool = _shards(cfg.data.path, split, cfg.data.on_error, cfg.data.cache_mb, digest)
        dataset = pool.info.params.get("dataset")
        if cfg.task.family == "omniglot" and dataset != "omniglot":
            raise ManifestError(f"data.path={cfg.data.path!r} holds {dataset!r} classes but task.family="
                                "omniglot; use task.family=images for other data sets")
        return pool
    kw = cfg.task.kwargs
    return _omniglot_pools(omniglot_root(kw.get("root")), kw.get("image_size", 28))[split]


def image_tasks(cfg: RunConfig, split: str, held_out: bool = False):
    """N-way K-shot tasks of ``split``: training (rotations, augmentation as configured), or
    held out (``held_out``: eval's way/shot/query where given, no rotations, no augmentation)."""
    kw = cfg.task.kwargs
    shape = {"way": kw.get("way", 5), "shot": kw.get("shot", 1), "query": kw.get("query", 15)}
    if held_out:
        shape |= {k: v for k in shape if (v := getattr(cfg.eval, k)) is not None}
    train = split == "train" and not held_out
    return ImageClasses(_class_pool(cfg, split), **shape,
                        rotations=bool(kw.get("rotations", cfg.task.family == "omniglot")) and train,
                        augment=Augment() if kw.get("augment", False) and train else None,
                        labels=kw.get("labels", "episode") if train else "episode")


def md_tasks(cfg: RunConfig, split: str, held_out: bool = False) -> MultiSourceEpisodes:
    """Meta-Dataset's variable-way variable-shot episodes of ``split`` from every source (the
    training sources, or ``held_out`` those meta-tested)."""
    pools = []
    for path in cfg.source_paths(held_out):
        pool = _shards(path, split, cfg.data.on_error, cfg.data.cache_mb, Manifest.read(path).digest)
        pools.append(SourcePool(str(pool.info.params.get("source") or path.rstrip("/").rsplit("/", 1)[-1]), pool))
    names = [p.name for p in pools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"data.sources: {twice} named more than once ({cfg.source_paths(held_out)}); each source once")
    weights = tuple(cfg.data.source_weights) if cfg.data.source_weights and not held_out else None
    return MultiSourceEpisodes(tuple(pools), EpisodeShape(**cfg.task.kwargs), weights)


def task_source(cfg: RunConfig, split: str | None = None, n_logical_shards: int | None = None):
    """The training (or ``split``'s) task source for ``cfg``."""
    split = split or cfg.data.split
    if cfg.task.family == MD_FAMILY:
        return md_tasks(cfg, split)
    if cfg.task.family in IMAGE_FAMILIES:
        return image_tasks(cfg, split)
    if cfg.data.path:
        return _episode_shards(cfg, split, n_logical_shards or cfg.runtime.logical_shards)
    return build_task(cfg.task.family, **cfg.task.kwargs)


def evaluation_batches(cfg: RunConfig, split: str | None = None, episodes: int | None = None,
                       batch: int | None = None) -> Iterator[EpisodeBatch]:
    """Held-out episodes for evaluation, ``batch`` at a time, ``episodes`` in all.

    Image tasks: the first ``episodes`` of the split's numbered set (``data.eval_seed``), the
    same for every run. Packed procedural pools: the split's episodes in order. Procedural
    families: fresh tasks from a seed stream training never draws."""
    split = split or cfg.eval.split
    episodes = episodes or cfg.eval.episodes
    batch = batch or cfg.eval.batch
    if cfg.task.family == MD_FAMILY:
        tasks = md_tasks(cfg, split, held_out=True)
        for s in range(len(tasks.sources)):
            yield from source_batches(cfg, s, split, episodes, batch, tasks)
        return
    if cfg.task.family in IMAGE_FAMILIES:
        tasks = image_tasks(cfg, split, held_out=True)
        for start in range(0, episodes, batch):
            yield tasks.numbered(start, min(batch, episodes - start), cfg.data.eval_seed, split_stream(split))
        return
    if cfg.data.path:
        seen = 0
        for b in iter_episodes(cfg.data.path, split, batch, on_error=cfg.data.on_error):
            if seen >= episodes:
                return
            b = b.slice(0, min(b.n_tasks, episodes - seen))
            seen += b.n_tasks
            yield b
        return
    source = task_source(cfg, split)
    stream = EVAL_STREAMS.get(split, len(EVAL_STREAMS))
    for i, start in enumerate(range(0, episodes, batch)):
        yield source.sample(min(batch, episodes - start), cfg.seed + EVAL_SEED_OFFSET, i, stream)


def source_batches(cfg: RunConfig, source: int, split: str | None = None, episodes: int | None = None,
                   batch: int | None = None, tasks: MultiSourceEpisodes | None = None) -> Iterator[EpisodeGroups]:
    """Meta-Dataset's held-out episodes of one source (index into the held-out sources): the
    first ``episodes`` of its numbered set, ``batch`` at a time (the paper reports 600 per
    source); ``tasks``: the held-out sources, when the caller has built them."""
    split = split or cfg.eval.split
    episodes = episodes or cfg.eval.episodes
    batch = batch or cfg.eval.batch
    tasks = tasks or md_tasks(cfg, split, held_out=True)
    for start in range(0, episodes, batch):
        yield tasks.numbered(start, min(batch, episodes - start), cfg.data.eval_seed, split_stream(split), source)


def dataset_input(cfg: RunConfig) -> dict[str, Any]:
    """What the run trains on, as an MLflow dataset input: packed shards (``data.path``: the
    manifest's digest, the path as source, episodes per split as profile), or a task family
    generated by code (its parameters' digest). Omniglot arrays are named by their folder;
    Meta-Dataset's sources by their manifests' digests together."""
    if cfg.data.sources:
        digests = {p: Manifest.read(p).digest for p in cfg.data.sources}
        digest = hashlib.sha256("".join(f"{p}:{d}\n" for p, d in digests.items()).encode()).hexdigest()
        return {"name": MD_FAMILY, "digest": digest, "source_type": "local", "source": ",".join(cfg.data.sources),
                "profile": {"split": cfg.data.split, "sources": list(cfg.data.sources),
                            "weights": cfg.data.source_weights}}
    if cfg.data.path:
        manifest = Manifest.read(cfg.data.path)
        scheme = cfg.data.path.split("://", 1)[0] if is_uri(cfg.data.path) else "local"
        infos = {s: manifest.split(s) for s in manifest.splits}
        count = {s: i.classes if i.is_classes else i.episodes for s, i in infos.items()}
        profile = {"split": cfg.data.split, "files": len(manifest.rows),
                   ("classes" if infos[cfg.data.split].is_classes else "episodes"): count}
        return {"name": cfg.data.path.rstrip("/").rsplit("/", 1)[-1], "digest": manifest.digest,
                "source_type": scheme, "source": cfg.data.path, "profile": profile}
    params = {"family": cfg.task.family, **cfg.task.kwargs, "seed": cfg.seed}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    if cfg.task.family == "omniglot":
        return {"name": "omniglot", "digest": digest, "source_type": "local",
                "source": omniglot_root(cfg.task.kwargs.get("root")), "profile": params}
    return {"name": cfg.task.family, "digest": digest, "source_type": "code",
            "source": f"distmeta.tasks ({cfg.task.family}, generated on the fly)", "profile": params}


def check_data(cfg: RunConfig) -> None:
    """Fail before any actor starts when the episodes cannot be had: a missing or mismatched
    data set at ``data.path``, no Omniglot arrays where the config looks for them, images the
    model does not take, or too few outputs for ``task.labels: global``."""
    if cfg.task.family == MD_FAMILY:
        source = task_source(cfg)
        check_input_shape(cfg, source.image_shape)
        held_out = md_tasks(cfg, cfg.eval.split, held_out=True)
        check_input_shape(cfg, held_out.image_shape)
        for s in range(len(source.sources)):  # the sampler's keys against every source's classes
            source.numbered(0, 1, cfg.seed, 0, s)
        for s in range(len(held_out.sources)):
            held_out.numbered(0, 1, cfg.data.eval_seed, 0, s)
    elif cfg.data.path:
        source = task_source(cfg)
        check_input_shape(cfg, getattr(getattr(source, "pool", None), "image_shape", None))
        if getattr(source, "labels", None) == "global":
            n_way = cfg.model.kwargs.get("n_way", 0)
            if n_way < source.n_classes:
                raise ConfigError(f"model.n_way={n_way}: task.labels=global needs one output per class of "
                                  f"the split, {source.n_classes}")
    elif cfg.task.family == "omniglot":
        root = omniglot_root(cfg.task.kwargs.get("root"))
        if not Path(root).is_dir():
            raise NotFound(
                f"Omniglot not found at {root}: set task.root or ${OMNIGLOT_ENV}, or pack shards with "
                "`distmeta data pack omniglot --root DIR --out DATA` and set data.path")


def check_input_shape(cfg: RunConfig, image_shape: tuple[int, ...] | None) -> None:
    """A ConfigError naming ``model.in_channels`` / ``model.image_size`` when the packed images
    (``[C, H, W]``) are not what the model takes."""
    kw = cfg.model.kwargs
    takes = inspect.signature(plugins.resolve("model", cfg.model.name)).parameters
    if image_shape is None or "image_size" not in takes:
        return
    channels, size = image_shape[0], image_shape[-1]
    wanted = {"model.in_channels": (kw.get("in_channels", 1), channels),
              "model.image_size": (kw.get("image_size", 28), size)}
    bad = [f"{k}={have} but the images at data.path have {want}" for k, (have, want) in wanted.items() if have != want]
    if bad:
        raise ConfigError("; ".join(bad) + f" (images are {list(image_shape)})")
