"""Conv4 (Vinyals et al. 2016; the MAML paper's Omniglot/miniImageNet network).

Four blocks of conv3x3-64, BatchNorm, ReLU, 2x2 max-pool, then a linear head. BatchNorm is
transductive (Finn et al. 2017): batch statistics always, no running statistics, which also
keeps it a pure function of (params, x) for ``torch.func``.
"""

from __future__ import annotations

from torch import nn

from distmeta.models.base import MetaModel


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
        nn.BatchNorm2d(c_out, track_running_stats=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def conv4(n_way: int, in_channels: int = 1, image_size: int = 28, hidden: int = 64,
          linear_layers: int = 0) -> MetaModel:
    """Conv4 for ``image_size`` x ``image_size`` inputs (28 for Omniglot, 84 for miniImageNet)."""
    if image_size < 16:
        raise ValueError(f"model.image_size={image_size}: Conv4 needs at least 16 pixels")
    side = image_size
    for _ in range(4):
        side //= 2
    body = nn.Sequential(
        _block(in_channels, hidden), _block(hidden, hidden), _block(hidden, hidden),
        _block(hidden, hidden), nn.Flatten(),
    )
    return MetaModel(body, hidden * side * side, n_way, linear_layers)
