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


MODEL_STREAM = 1_000_003
"""The stream of the randomness a model or rule draws while computing a shard (DropBlock)."""


def torch_seed(seed: int, step: int, shard: int) -> int:
    """The seed of torch's generators while logical shard ``shard`` of step ``step`` computes:
    what a model draws (DropBlock's masks) is then a function of (seed, step, shard) only, not
    of what the worker computed before, so 1 or 2 workers and a retried step agree bit for bit."""
    return int(episode_rng(seed, step, shard, MODEL_STREAM).integers(2**63 - 1))
