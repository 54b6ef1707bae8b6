"""Linear models for the representation-learning experiments.

``linear_rep``: y = <B w, x> with the representation B in R^{d x k} shared (the body) and w
in R^k the per-task head (Collins et al. 2022). ``linear``: the shallow y = <theta, x>;
add ``linear_layers`` for the deep-linear variant of Arnold et al. (2021).
"""

from __future__ import annotations

from torch import nn

from distmeta.models.base import MetaModel


def linear_rep(d: int, k: int, linear_layers: int = 0) -> MetaModel:
    if not 0 < k <= d:
        raise ValueError(f"model.k={k}: need 0 < k <= d={d}")
    return MetaModel(nn.Linear(d, k, bias=False), k, 1, linear_layers, head_bias=False)


def linear(d: int, out_features: int = 1, linear_layers: int = 0) -> MetaModel:
    return MetaModel(nn.Identity(), d, out_features, linear_layers, head_bias=False)


def representation(model: MetaModel, params: dict) -> object:
    """The learned B (d x k) of a ``linear_rep`` model: the product of its body's matrices."""
    mats = [params[n] for n, _ in model.body.named_parameters(prefix="body")]
    b_t = mats[0]
    for m in mats[1:]:
        b_t = m @ b_t
    return b_t.T
