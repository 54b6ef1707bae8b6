"""ResNet-18 (He et al. 2016), the backbone of Meta-Dataset's baselines (Triantafillou et al.
2020, Section 4 and Appendix: ResNet-18 at 84 or 126 pixels; the paper's best results use it).

The ImageNet ResNet-18: a 7x7 stride-2 stem convolution with 3x3 stride-2 max-pooling, then
four stages of two basic blocks (two 3x3 convolutions with BatchNorm and ReLU, an identity
shortcut, or a 1x1 stride-2 convolution with BatchNorm where the shape changes) of
64-128-256-512 channels (``channels``), the last map averaged over space: 512 features.

BatchNorm is transductive (batch statistics always, no running statistics), as in Conv4 and
ResNet-12, so the network is a pure function of (params, x) for ``torch.func`` and the
inner loop.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distmeta.models.base import MetaModel
from distmeta.models.conv4 import SpatialMean

CHANNELS = (64, 128, 256, 512)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, track_running_stats=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _bn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _bn(c_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _bn(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(n_way: int, in_channels: int = 3, image_size: int = 84,
             channels: tuple[int, ...] | list[int] = CHANNELS, linear_layers: int = 0) -> MetaModel:
    """ResNet-18 for ``image_size`` x ``image_size`` inputs (Meta-Dataset: 84 or 126)."""
    channels = tuple(channels)
    if len(channels) != 4 or min(channels) < 1:
        raise ValueError(f"model.channels={list(channels)}: expected 4 positive widths")
    if image_size < 32:
        raise ValueError(f"model.image_size={image_size}: ResNet-18 divides it by 32; need >= 32")
    stem = [nn.Conv2d(in_channels, channels[0], 7, 2, 3, bias=False), _bn(channels[0]), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1)]
    stages = []
    for i, c in enumerate(channels):
        c_in = channels[0] if i == 0 else channels[i - 1]
        stages += [BasicBlock(c_in, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
    return MetaModel(nn.Sequential(*stem, *stages, SpatialMean()), channels[-1], n_way, linear_layers)
