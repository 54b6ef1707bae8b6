"""Sinusoid regression (Finn et al. 2017, Section 5.1).

Each task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5.0], phase phi ~ U[0, pi] and
x ~ U[-5, 5]; K support points, Q query points, MSE loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from distmeta.seeding import episode_rng
from distmeta.types import EpisodeBatch


@dataclass(frozen=True)
class Sinusoid:
    shots: int = 10
    query: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, float(np.pi))
    x_range: tuple[float, float] = (-5.0, 5.0)

    loss = "mse"
    family: ClassVar[str] = "sinusoid"

    def __post_init__(self) -> None:
        if self.shots < 1 or self.query < 1:
            raise ValueError(f"task.shots={self.shots}, task.query={self.query}: both must be >= 1")
        for name in ("amplitude", "phase", "x_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"task.{name}={[lo, hi]}: low must be <= high")

    def sample(self, n_tasks: int, seed: int, step: int, shard: int) -> EpisodeBatch:
        rng = episode_rng(seed, step, shard)
        amp = rng.uniform(*self.amplitude, size=(n_tasks, 1, 1))
        phase = rng.uniform(*self.phase, size=(n_tasks, 1, 1))
        x = rng.uniform(*self.x_range, size=(n_tasks, self.shots + self.query, 1))
        y = amp * np.sin(x - phase)
        xt = torch.from_numpy(x.astype(np.float32))
        yt = torch.from_numpy(y.astype(np.float32))
        k = self.shots
        return EpisodeBatch(xt[:, :k], yt[:, :k], xt[:, k:], yt[:, k:], "mse")
