"""The task-batched forward (bmm, grouped convolutions) gives what vmap of the model's own
forward gives, for per-task and shared parameters; models it does not know fall back."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from distmeta.models import conv4, mlp, resnet12
from distmeta.models.batched import forward_tasks, supports

T = 3


def reference(model, params, x):
    shared = {k: v for k, v in params.items() if v.dim() == dict(model.named_parameters())[k].dim()}
    per_task = {k: v for k, v in params.items() if k not in shared}
    return vmap(lambda p, xi: functional_call(model, {**shared, **p}, (xi,)))(per_task, x)


MODELS = {"mlp": (lambda: mlp(hidden=(8, 8)), (5, 1)),
          "conv4-max": (lambda: conv4(4, 3, 16, hidden=6, pool="max"), (5, 3, 16, 16)),
          "conv4-stride": (lambda: conv4(4, 3, 16, hidden=6, pool="stride", linear_layers=1), (5, 3, 16, 16))}


@pytest.mark.parametrize("shared", ["none", "body", "all"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_batched_forward_equals_vmap_of_the_forward(name, shared):
    torch.manual_seed(0)
    build, shape = MODELS[name]
    model = build().double()
    assert supports(model)
    params = {}
    for k, v in model.named_parameters():
        keep = shared == "all" or (shared == "body" and k.startswith("body."))
        params[k] = v.detach() if keep else v.detach() + 0.1 * torch.randn(T, *v.shape, dtype=v.dtype)
    x = torch.randn(T, *shape, dtype=torch.float64)
    got = forward_tasks(model, params, x)
    want = reference(model, params, x)
    assert got.shape == want.shape == (T, shape[0], 4 if name != "mlp" else 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_models_it_does_not_know_fall_back_to_vmap():
    assert not supports(resnet12(3, image_size=32, channels=[4, 4, 4, 4]))  # DropBlock, residual blocks
    assert not supports(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    assert not supports(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))  # running statistics
    model = mlp(hidden=(4,))
    assert supports(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # vmap's convolutions stay float32 under autocast
        assert not supports(model)
    assert supports(model)
