"""Multi-task linear regression with a shared low-rank representation (Collins, Mokhtari,
Oh, Shakkottai, "MAML and ANIL Provably Learn Representations", ICML 2022).

Task i: y = <B* w*_i, x> + noise * eps, with B* in R^{d x k} (orthonormal columns, fixed by
``rep_seed``), w*_i ~ N(0, I_k), x ~ N(0, I_d), eps ~ N(0, 1). Progress is measured by the
principal-angle distance between col(B_hat) and col(B*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from distmeta.seeding import episode_rng
from distmeta.types import EpisodeBatch


@dataclass(frozen=True)
class LinearRepresentation:
    d: int = 20
    k: int = 3
    noise: float = 0.0
    m_support: int = 10
    m_query: int = 10
    rep_seed: int = 0
    b_star: np.ndarray = field(init=False, repr=False, compare=False)

    loss = "mse"
    family: ClassVar[str] = "linear_rep"

    def __post_init__(self) -> None:
        if not 0 < self.k <= self.d:
            raise ValueError(f"task.k={self.k}: need 0 < k <= d={self.d}")
        if self.noise < 0:
            raise ValueError(f"task.noise={self.noise}: must be >= 0")
        if self.m_support < 1 or self.m_query < 1:
            raise ValueError(f"task.m_support={self.m_support}, task.m_query={self.m_query}: must be >= 1")
        rng = np.random.default_rng(np.random.SeedSequence([self.rep_seed, 0x5EED]))
        q, _ = np.linalg.qr(rng.standard_normal((self.d, self.k)))
        object.__setattr__(self, "b_star", q)

    def sample(self, n_tasks: int, seed: int, step: int, shard: int) -> EpisodeBatch:
        rng = episode_rng(seed, step, shard)
        m = self.m_support + self.m_query
        w = rng.standard_normal((n_tasks, self.k))
        theta = w @ self.b_star.T                       # [T, d]
        x = rng.standard_normal((n_tasks, m, self.d))
        y = np.einsum("tmd,td->tm", x, theta)[..., None]
        y = y + self.noise * rng.standard_normal(y.shape)
        xt = torch.from_numpy(x.astype(np.float32))
        yt = torch.from_numpy(y.astype(np.float32))
        s = self.m_support
        return EpisodeBatch(xt[:, :s], yt[:, :s], xt[:, s:], yt[:, s:], "mse")


def principal_angle_distance(b_hat: Tensor | np.ndarray, b_star: Tensor | np.ndarray) -> float:
    """``||(I - B* B*^T) Q||_2`` with Q an orthonormal basis of col(B_hat): the sine of the
    largest principal angle between the two column spaces (0 = recovered, 1 = orthogonal)."""
    b_hat = torch.as_tensor(np.asarray(b_hat, dtype=np.float64) if isinstance(b_hat, np.ndarray)
                            else b_hat.detach().double())
    b_star = torch.as_tensor(np.asarray(b_star, dtype=np.float64))
    q, _ = torch.linalg.qr(b_hat)
    p_star = torch.linalg.qr(b_star)[0]
    residual = q - p_star @ (p_star.T @ q)
    return float(torch.linalg.matrix_norm(residual, ord=2))
