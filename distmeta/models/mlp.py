"""The MAML sinusoid network (Finn et al. 2017): 1-40-40-1 with ReLU."""

from __future__ import annotations

from torch import nn

from distmeta.models.base import MetaModel


def mlp(in_features: int = 1, hidden: tuple[int, ...] = (40, 40), out_features: int = 1,
        linear_layers: int = 0) -> MetaModel:
    """Fully connected body with ReLU and a linear ``head``."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return MetaModel(nn.Sequential(*layers), width, out_features, linear_layers)
