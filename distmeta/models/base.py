"""Every model is a ``body`` (features) followed by a linear ``head``.

The split is by name: parameters under ``head.`` are the head, so ``adapt: head`` (ANIL,
Raghu et al. 2020), the zeroing trick (Kao et al. 2021) and closed-form heads (R2-D2,
Bertinetto et al. 2019) all find it without model-specific code. Any other ``nn.Module``
works too: ``model.head`` names its head module.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)
HEAD_PREFIX = "head."
_SAID: set[str] = set()


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


def head_prefix(model: nn.Module | None) -> str:
    """The name prefix of ``model``'s head parameters: ``head.`` unless the config's
    ``model.head`` names another module (set as ``model.head_prefix`` when it is built)."""
    return getattr(model, "head_prefix", HEAD_PREFIX) if model is not None else HEAD_PREFIX


def zero_head(params: dict[str, Tensor], prefix: str = HEAD_PREFIX) -> None:
    """The zeroing trick (Kao, Chiu, Chen, ICLR 2022): set the linear head to zero, in place."""
    with torch.no_grad():
        for name, value in params.items():
            if name.startswith(prefix):
                value.zero_()


def functional_batchnorm(model: nn.Module, name: str) -> nn.Module:
    """``model`` with every BatchNorm that keeps running statistics made functional
    (``torch.func.replace_all_batch_norm_modules_``): batch statistics in training and at test,
    as Conv4's and ResNet-12's transductive BatchNorm, and no buffers updated in place, which
    the functional inner loop (``functional_call`` under ``vmap``) cannot carry. Said once a
    process in the log."""
    layers = [n or "(the model)" for n, m in model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if layers:
        torch.func.replace_all_batch_norm_modules_(model)
        if name not in _SAID:
            _SAID.add(name)
            log.info("model.name=%s: BatchNorm %s use batch statistics (running statistics are not kept: the "
                     "inner loop is functional)", name, ", ".join(layers))
    return model
