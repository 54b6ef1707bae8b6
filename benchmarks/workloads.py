"""The two workloads every section measures, and the rules' hyper-parameters on each.

* ``sinusoid``: the MAML paper's regression MLP 1-40-40-1, 10-shot, 10 query points,
  meta-batch 25 (Finn et al. 2017, Section 5.1).
* ``conv4``: the Omniglot Conv4 of ``configs/omniglot_5w1s_*.yaml`` (stride-2 convolutions,
  as cbfinn/maml), 5-way 1-shot, one query per class, 28x28 inputs, meta-batch 32 (Finn et
  al. 2017). Images are random: speed and memory do not depend on the pixels, and the bench
  must run without the Omniglot files.

Rule hyper-parameters follow the configs and the papers: MAML/FOMAML one inner step (lr 0.01
sinusoid, 0.4 Omniglot); iMAML as ``configs/sinusoid_imaml.yaml`` on the sinusoid and as the
iMAML paper's Omniglot setting (16 inner steps, lr 0.1, lambda 2, 5 CG steps) on Conv4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from distmeta.algorithms import FOMAML, IMAML, MAML, AdaptingRule
from distmeta.models import conv4, mlp
from distmeta.tasks import ImageClasses, Sinusoid
from distmeta.types import EpisodeBatch, Params

RULE_CLASSES: dict[str, type[AdaptingRule]] = {"maml": MAML, "fomaml": FOMAML, "imaml": IMAML}


@dataclass(frozen=True)
class Workload:
    """A model, one meta-batch of episodes, and each rule's hyper-parameters on it."""

    name: str
    description: str
    model: nn.Module = field(repr=False)
    batch: EpisodeBatch = field(repr=False)
    hyper: dict[str, dict[str, Any]]

    @property
    def meta_batch(self) -> int:
        return self.batch.n_tasks

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def rule(self, name: str, **overrides: Any) -> AdaptingRule:
        """Rule ``name`` with this workload's hyper-parameters (``overrides`` win)."""
        return RULE_CLASSES[name](**(self.hyper[name] | overrides))

    def params(self) -> Params:
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def meta_step(self, rule: AdaptingRule, batch: EpisodeBatch | None = None) -> Callable[[], object]:
        """A zero-argument call of ``rule.meta_gradient`` on this workload (or on ``batch``)."""
        params, chosen = self.params(), batch if batch is not None else self.batch
        return lambda: rule.meta_gradient(self.model, params, chosen)

    def describe(self) -> dict[str, Any]:
        b = self.batch
        return {"model": self.description, "params": self.n_params, "meta_batch": self.meta_batch,
                "support": int(b.support_x.shape[1]), "query": int(b.query_x.shape[1]),
                "input_shape": list(b.support_x.shape[2:]), "hyper": self.hyper}


def random_images(n_classes: int = 100, examples: int = 20, size: int = 28, seed: int = 0) -> np.ndarray:
    """A pool of random uint8 "characters" ``[classes, examples, size, size]``."""
    return np.random.default_rng(seed).integers(0, 256, (n_classes, examples, size, size), dtype=np.uint8)


def sinusoid(meta_batch: int = 25, shots: int = 10, query: int = 10, seed: int = 0) -> Workload:
    """The MAML sinusoid MLP and one meta-batch of sinusoid tasks."""
    torch.manual_seed(seed)
    batch = Sinusoid(shots=shots, query=query).sample(meta_batch, seed, 0, 0)
    hyper = {"maml": {"inner_lr": 0.01, "inner_steps": 1}, "fomaml": {"inner_lr": 0.01, "inner_steps": 1},
             "imaml": {"inner_lr": 0.02, "inner_steps": 5, "lam": 5.0, "cg_steps": 3}}
    return Workload("sinusoid", "MLP 1-40-40-1", mlp(hidden=(40, 40)), batch, hyper)


def omniglot_conv4(meta_batch: int = 32, way: int = 5, shot: int = 1, query: int = 1,
                   image_size: int = 28, pool: str = "stride", seed: int = 0) -> Workload:
    """Conv4 on random 28x28 images, N-way K-shot (Omniglot-sized)."""
    torch.manual_seed(seed)
    classes = ImageClasses(random_images(size=image_size, seed=seed), way=way, shot=shot, query=query)
    batch = classes.sample(meta_batch, seed, 0, 0)
    hyper = {"maml": {"inner_lr": 0.4, "inner_steps": 1}, "fomaml": {"inner_lr": 0.4, "inner_steps": 1},
             "imaml": {"inner_lr": 0.1, "inner_steps": 16, "lam": 2.0, "cg_steps": 5}}
    return Workload("conv4", f"Conv4 ({pool}) {way}-way {shot}-shot {image_size}x{image_size}",
                    conv4(way, image_size=image_size, pool=pool), batch, hyper)
