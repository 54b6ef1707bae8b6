"""Where a run's tasks come from: packed shards (``data.path``) or a task family directly.

Both give the same interface, ``sample(n_tasks, seed, step, shard) -> EpisodeBatch``, a pure
function of its arguments. Evaluation draws held-out tasks: the split's shards in order, the
held-out Omniglot characters, or fresh procedural tasks from a seed stream that training
never uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from distmeta.config import RunConfig
from distmeta.types import EpisodeBatch

EVAL_SEED_OFFSET = 1_000_003
"""Procedural evaluation tasks use ``seed + EVAL_SEED_OFFSET``: a stream training never draws."""

OMNIGLOT_ENV = "DISTMETA_OMNIGLOT"
DEFAULT_OMNIGLOT = "~/.cache/distmeta/omniglot"


def omniglot_root(kwargs: dict[str, Any]) -> str:
    """``task.root``, else ``$DISTMETA_OMNIGLOT``, else ``~/.cache/distmeta/omniglot``."""
    return os.path.expanduser(kwargs.get("root") or os.environ.get(OMNIGLOT_ENV) or DEFAULT_OMNIGLOT)


def _shard_source(cfg: RunConfig, split: str, n_logical_shards: int):
    from distmeta.data import ShardEpisodeSource

    source = ShardEpisodeSource(cfg.data.path, split=split, seed=cfg.seed,  # type: ignore[arg-type]
                                n_logical_shards=n_logical_shards, on_error=cfg.data.on_error)
    expected = {k: v for k, v in cfg.task.kwargs.items() if k in ("way", "shot", "query", "shots")}
    source.check_compatible(family=cfg.task.family, **expected)
    return source


def _omniglot(cfg: RunConfig, split: str):
    from distmeta.data import omniglot_classes
    from distmeta.tasks import ImageClasses

    kw = cfg.task.kwargs
    pools = omniglot_classes(omniglot_root(kw), image_size=kw.get("image_size", 28))
    return ImageClasses(pools[split], way=kw.get("way", 5), shot=kw.get("shot", 1),
                        query=kw.get("query", 15), rotations=kw.get("rotations", True) and split == "train")


def task_source(cfg: RunConfig, split: str | None = None, n_logical_shards: int | None = None):
    """The training (or ``split``'s) task source for ``cfg``."""
    split = split or cfg.data.split
    if cfg.data.path:
        return _shard_source(cfg, split, n_logical_shards or cfg.runtime.logical_shards)
    if cfg.task.family == "omniglot":
        return _omniglot(cfg, split)
    from distmeta.tasks import LinearRepresentation, Sinusoid

    cls = Sinusoid if cfg.task.family == "sinusoid" else LinearRepresentation
    return cls(**cfg.task.kwargs)


def evaluation_batches(cfg: RunConfig, split: str | None = None, episodes: int | None = None,
                       batch: int | None = None) -> Iterator[EpisodeBatch]:
    """Held-out episodes for evaluation, ``batch`` at a time, ``episodes`` in all."""
    split = split or cfg.eval.split
    episodes = episodes or cfg.eval.episodes
    batch = batch or cfg.eval.batch
    if cfg.data.path:
        from distmeta.data import iter_episodes

        seen = 0
        for b in iter_episodes(cfg.data.path, split, batch, on_error=cfg.data.on_error):
            if seen >= episodes:
                return
            b = b.slice(0, min(b.n_tasks, episodes - seen))
            seen += b.n_tasks
            yield b
        return
    source = task_source(cfg, split)
    for i, start in enumerate(range(0, episodes, batch)):
        yield source.sample(min(batch, episodes - start), cfg.seed + EVAL_SEED_OFFSET, i, 0)
