"""Training augmentation for 84-px and 32-px few-shot sets, seeded by the episode's generator.

The usual recipe of MetaOptNet (Lee et al. 2019) and the pre-training baselines since:
random crop with zero padding (8 px at 84, 4 px at 32: ``RandomCrop(size, padding)``), a
horizontal flip with probability 1/2, and colour jitter (brightness, contrast, saturation
each scaled by a factor drawn from [1 - s, 1 + s], s = 0.4, in random order as torchvision's
``ColorJitter`` does). Off unless ``task.augment: true``: the MAML protocol uses none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _grey(x: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of ``[C, H, W]`` (as PIL's ``convert("L")``), kept ``[1, H, W]``."""
    if x.shape[0] != 3:
        return x
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


@dataclass(frozen=True)
class Augment:
    """Crop with padding, flip, colour jitter; applied in place to float ``[N, C, H, W]``."""

    padding: int | None = None
    flip: bool = True
    jitter: float = 0.4

    def pad_for(self, size: int) -> int:
        return self.padding if self.padding is not None else (8 if size >= 64 else 4)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> None:
        n, _, h, w = images.shape
        pad = self.pad_for(h)
        offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
        flips = rng.random(n) < 0.5
        factors = rng.uniform(1 - self.jitter, 1 + self.jitter, size=(n, 3))
        orders = np.argsort(rng.random((n, 3)), axis=1)
        for i in range(n):
            x = images[i]
            if pad:
                padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
                x = padded[:, offsets[i, 0]:offsets[i, 0] + h, offsets[i, 1]:offsets[i, 1] + w]
            if self.flip and flips[i]:
                x = x[:, :, ::-1]
            if self.jitter:
                for op in orders[i]:
                    f = factors[i, op]
                    if op == 0:
                        x = x * f
                    elif op == 1:
                        x = f * x + (1 - f) * _grey(x).mean()
                    else:
                        x = f * x + (1 - f) * _grey(x)
                x = np.clip(x, 0.0, 1.0)
            images[i] = x
