"""A short meta-training loop (plain torch optimiser, no Ray) really meta-learns."""

import pytest
import torch

from distmeta.algorithms import ALGORITHMS
from distmeta.models import mlp
from distmeta.tasks import Sinusoid

SETTINGS = {
    "maml": (dict(inner_lr=0.02, inner_steps=1), 400),
    "fomaml": (dict(inner_lr=0.02, inner_steps=1), 400),
    "imaml": (dict(inner_lr=0.02, inner_steps=5, lam=5.0, cg_steps=3), 300),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_meta_training_drives_post_adaptation_mse_below_pre_adaptation(name):
    hyper, steps = SETTINGS[name]
    family = Sinusoid(shots=10, query=10)
    torch.manual_seed(0)
    model = mlp()
    rule = ALGORITHMS[name](**hyper)
    params = {k: v.requires_grad_(True) for k, v in rule.init_params(model).items()}
    held_out = family.sample(100, seed=1, step=0, shard=0)
    untrained = rule.evaluate(model, {k: v.detach() for k, v in params.items()}, held_out, steps=5).mean()[0]
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    for step in range(steps):
        mg = rule.meta_gradient(model, {k: v.detach() for k, v in params.items()}, family.sample(10, 0, step, 0))
        for k, p in params.items():
            p.grad = mg.grads[k] / mg.n_tasks
        optimizer.step()
    curve = rule.evaluate(model, {k: v.detach() for k, v in params.items()}, held_out, steps=5).mean()[0]
    pre, post = curve[0], curve[-1]
    assert post < 0.75 * pre, curve
    assert post < 0.75 * untrained[-1], (untrained, curve)
