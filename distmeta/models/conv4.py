"""Conv4 (Vinyals et al. 2016; the MAML paper's Omniglot/miniImageNet network).

Four blocks of conv3x3-64, BatchNorm, ReLU, then a linear head. ``pool`` picks how a block
halves the resolution:

* ``max``: stride-1 convolution then 2x2 max-pool; features are the flattened last map
  (the miniImageNet network of Finn et al. 2017, and Vinyals et al. 2016).
* ``stride``: stride-2 convolution, no pooling; features are the last map averaged over
  space (the Omniglot network of Finn et al. 2017 as released in cbfinn/maml). About 4x
  fewer FLOPs than ``max`` on 28x28 inputs.

BatchNorm is transductive (Finn et al. 2017): batch statistics always, no running
statistics, which also keeps it a pure function of (params, x) for ``torch.func``.
"""

from __future__ import annotations

from torch import Tensor, nn

from distmeta.models.base import MetaModel

POOLS = ("max", "stride")


class SpatialMean(nn.Module):
    """``[..., C, H, W] -> [..., C]``: the mean over the spatial positions."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


def _block(c_in: int, c_out: int, pool: str) -> nn.Sequential:
    stride = 2 if pool == "stride" else 1
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1),
        nn.BatchNorm2d(c_out, track_running_stats=False),
        nn.ReLU(),
    ]
    if pool == "max":
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def conv4(n_way: int, in_channels: int = 1, image_size: int = 28, hidden: int = 64,
          linear_layers: int = 0, pool: str = "max") -> MetaModel:
    """Conv4 for ``image_size`` x ``image_size`` inputs (28 for Omniglot, 84 for miniImageNet)."""
    if image_size < 16:
        raise ValueError(f"model.image_size={image_size}: Conv4 needs at least 16 pixels")
    if pool not in POOLS:
        raise ValueError(f"model.pool={pool!r}: expected one of {list(POOLS)}")
    blocks = [_block(in_channels if i == 0 else hidden, hidden, pool) for i in range(4)]
    if pool == "stride":
        return MetaModel(nn.Sequential(*blocks, SpatialMean()), hidden, n_way, linear_layers)
    side = image_size
    for _ in range(4):
        side //= 2
    return MetaModel(nn.Sequential(*blocks, nn.Flatten()), hidden * side * side, n_way, linear_layers)
