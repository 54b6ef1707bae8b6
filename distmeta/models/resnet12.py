"""ResNet-12, the backbone of MetaOptNet (Lee et al. 2019) and TADAM (Oreshkin et al. 2018).

Four residual blocks of 64-160-320-640 channels (``channels``). Each block is three 3x3
convolutions with BatchNorm, leaky ReLU (slope 0.1) after the first two and after the sum
with the shortcut (a 1x1 convolution with BatchNorm), then 2x2 max-pooling; optional
DropBlock (Ghiasi et al. 2018) in the last two blocks, as MetaOptNet's. The features are the
last map averaged over space: 640 for 84x84 inputs (a 5x5 map) and for 32x32 (2x2).

BatchNorm is transductive (batch statistics always, no running statistics), as in Conv4,
so the network is a pure function of (params, x) for ``torch.func`` and the inner loop.
DropBlock is active only in training mode (``model.train()``), and draws different blocks
for each task of a vectorised chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distmeta.models.base import MetaModel
from distmeta.models.conv4 import SpatialMean

CHANNELS = (64, 160, 320, 640)


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drop ``block_size`` x ``block_size`` squares of a
    feature map at rate ``drop_rate``, then rescale what is kept."""

    def __init__(self, drop_rate: float, block_size: int) -> None:
        super().__init__()
        if not 0 <= drop_rate < 1 or block_size < 1:
            raise ValueError(f"model.drop_rate={drop_rate}, block_size={block_size}: need 0 <= rate < 1, size >= 1")
        self.drop_rate, self.block_size = drop_rate, block_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_rate == 0:
            return x
        h, w = x.shape[-2:]
        size = min(self.block_size, h, w)
        valid = (h - size + 1) * (w - size + 1)
        gamma = self.drop_rate * h * w / (size * size * valid)
        seeds = torch.bernoulli(torch.full((*x.shape[:-2], h - size + 1, w - size + 1), gamma,
                                           dtype=x.dtype, device=x.device))
        pad = size - 1
        blocks = F.max_pool2d(F.pad(seeds, (pad, pad, pad, pad)), size, stride=1)
        keep = 1.0 - blocks
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))


class ResBlock(nn.Module):
    """conv-BN-leaky ReLU x2, conv-BN, + 1x1 shortcut, leaky ReLU, max-pool, DropBlock."""

    def __init__(self, c_in: int, c_out: int, drop_rate: float = 0.0, block_size: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, track_running_stats=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, track_running_stats=False)
        self.conv3 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, track_running_stats=False)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False),
                                      nn.BatchNorm2d(c_out, track_running_stats=False))
        self.drop = DropBlock(drop_rate, block_size)

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = F.leaky_relu(self.bn2(self.conv2(out)), 0.1)
        out = F.leaky_relu(self.bn3(self.conv3(out)) + self.shortcut(x), 0.1)
        return self.drop(F.max_pool2d(out, 2))


def resnet12(n_way: int, in_channels: int = 3, image_size: int = 84,
             channels: tuple[int, ...] | list[int] = CHANNELS, drop_rate: float = 0.0,
             block_size: int = 5, linear_layers: int = 0) -> MetaModel:
    """ResNet-12 for ``image_size`` x ``image_size`` inputs (84 for the ImageNet sets, 32 for
    CIFAR-FS and FC100). ``drop_rate`` > 0 adds DropBlock to the last two blocks (MetaOptNet:
    0.1, block size 5)."""
    channels = tuple(channels)
    if len(channels) != 4 or min(channels) < 1:
        raise ValueError(f"model.channels={list(channels)}: expected 4 positive widths")
    if image_size < 16:
        raise ValueError(f"model.image_size={image_size}: ResNet-12 halves it four times; need >= 16")
    blocks = [ResBlock(in_channels if i == 0 else channels[i - 1], c, drop_rate if i >= 2 else 0.0, block_size)
              for i, c in enumerate(channels)]
    return MetaModel(nn.Sequential(*blocks, SpatialMean()), channels[-1], n_way, linear_layers)
