"""Every model is a ``body`` (features) followed by a linear ``head``.

The split is by name: parameters under ``head.`` are the head, so ``adapt: head`` (ANIL,
Raghu et al. 2020), the zeroing trick (Kao et al. 2021) and closed-form heads (R2-D2,
Bertinetto et al. 2019) all find it without model-specific code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

HEAD_PREFIX = "head."


class MetaModel(nn.Module):
    """``head(body(x))``; ``linear_layers`` extra square linear layers (no non-linearity)
    end the body: the same function class, more depth (Arnold et al. 2021)."""

    def __init__(self, body: nn.Module, n_features: int, out_features: int,
                 linear_layers: int = 0, head_bias: bool = True) -> None:
        super().__init__()
        if linear_layers < 0:
            raise ValueError(f"model.linear_layers={linear_layers}: must be >= 0")
        extra = [_identity_linear(n_features) for _ in range(linear_layers)]
        self.body = nn.Sequential(body, *extra) if extra else body
        self.head = nn.Linear(n_features, out_features, bias=head_bias)
        self.n_features = n_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _identity_linear(width: int) -> nn.Linear:
    layer = nn.Linear(width, width, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(width))
    return layer


def zero_head(params: dict[str, Tensor]) -> None:
    """The zeroing trick (Kao, Chiu, Chen, ICLR 2022): set the linear head to zero, in place."""
    with torch.no_grad():
        for name, value in params.items():
            if name.startswith(HEAD_PREFIX):
                value.zero_()
