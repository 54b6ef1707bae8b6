"""Seeds derived from (seed, step, shard): the same triple always gives the same episodes."""

from __future__ import annotations

import numpy as np


def episode_rng(seed: int, step: int, shard: int, stream: int = 0) -> np.random.Generator:
    """A PCG64 generator keyed by ``(seed, step, shard, stream)`` through ``SeedSequence``.

    Independent of the worker that draws it, of the order of draws and of the platform, so a
    retried or resumed step on another worker replays exactly the same tasks.
    """
    for name, value in (("seed", seed), ("step", step), ("shard", shard), ("stream", stream)):
        if value < 0:
            raise ValueError(f"{name}={value}: must be >= 0")
    return np.random.default_rng(np.random.SeedSequence([seed, step, shard, stream]))
