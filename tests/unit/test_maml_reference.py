"""MAML and first-order MAML against references written with plain autograd and with
central finite differences of the MAML objective, in float64."""

import pytest
import torch

from distmeta.algorithms import FOMAML, MAML
from distmeta.models import mlp
from distmeta.tasks import Sinusoid


def small_setup(n_tasks=3, seed=0):
    torch.manual_seed(seed)
    model = mlp(hidden=(8, 8)).double()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch = Sinusoid(shots=5, query=7).sample(n_tasks, seed=seed, step=0, shard=0).to(dtype=torch.float64)
    return model, params, batch


def names_for(params, adapt):
    return [k for k in params if adapt == "all" or k.startswith("head.")]


def reference_objective(model, params, batch, lr, steps, adapt, create_graph):
    """Sum over tasks of the post-adaptation query loss, by an explicit autograd loop."""
    total = 0.0
    adapted_names = names_for(params, adapt)
    for t in range(batch.n_tasks):
        fast = dict(params)
        for _ in range(steps):
            pred = torch.func.functional_call(model, fast, (batch.support_x[t],))
            loss = torch.nn.functional.mse_loss(pred, batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[k] for k in adapted_names], create_graph=create_graph)
            fast = dict(fast)
            for k, g in zip(adapted_names, grads, strict=True):
                fast[k] = fast[k] - lr * g
        pred = torch.func.functional_call(model, fast, (batch.query_x[t],))
        total = total + torch.nn.functional.mse_loss(pred, batch.query_y[t])
    return total


def flat(grads, keys):
    return torch.cat([grads[k].reshape(-1) for k in keys])


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("adapt", ["all", "head"])
@pytest.mark.parametrize("steps", [1, 3])
def test_maml_matches_autograd_loop(adapt, steps):
    model, params, batch = small_setup()
    lr = 0.05
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    objective = reference_objective(model, leaves, batch, lr, steps, adapt, True)
    ref = torch.autograd.grad(objective, list(leaves.values()))
    ref = dict(zip(leaves, ref, strict=True))
    got = MAML(inner_lr=lr, inner_steps=steps, adapt=adapt).meta_gradient(model, params, batch)
    assert got.n_tasks == 3
    assert rel_err(flat(got.grads, params), flat(ref, params)) < 1e-10
    assert got.metrics["query_loss"] == pytest.approx(float(objective), rel=1e-10)


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_matches_finite_differences(steps):
    model, params, batch = small_setup()
    lr, eps = 0.05, 1e-6
    got = MAML(inner_lr=lr, inner_steps=steps).meta_gradient(model, params, batch)
    keys = list(params)
    theta = flat(params, keys)
    shapes = [(k, params[k].shape, params[k].numel()) for k in keys]

    def objective(vec):
        p, i = {}, 0
        for k, shape, n in shapes:
            p[k] = vec[i:i + n].reshape(shape).requires_grad_(True)
            i += n
        return float(reference_objective(model, p, batch, lr, steps, "all", True))

    fd = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        fd[i] = (objective(theta + e) - objective(theta - e)) / (2 * eps)
    assert rel_err(flat(got.grads, keys), fd) < 1e-6


@pytest.mark.parametrize("adapt", ["all", "head"])
def test_fomaml_matches_autograd_loop(adapt):
    model, params, batch = small_setup()
    lr, steps = 0.05, 2
    names = names_for(params, adapt)
    ref = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(batch.n_tasks):
        fast = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(
                torch.func.functional_call(model, fast, (batch.support_x[t],)), batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[k] for k in names])
            for k, g in zip(names, grads, strict=True):
                fast[k] = (fast[k] - lr * g).detach().requires_grad_(True)
        loss = torch.nn.functional.mse_loss(
            torch.func.functional_call(model, fast, (batch.query_x[t],)), batch.query_y[t])
        for k, g in zip(fast, torch.autograd.grad(loss, list(fast.values())), strict=True):
            ref[k] += g
    got = FOMAML(inner_lr=lr, inner_steps=steps, adapt=adapt).meta_gradient(model, params, batch)
    assert rel_err(flat(got.grads, params), flat(ref, params)) < 1e-10


def test_fomaml_differs_from_maml_by_second_order_terms():
    model, params, batch = small_setup()
    maml = MAML(inner_lr=0.05, inner_steps=2).meta_gradient(model, params, batch)
    fo = FOMAML(inner_lr=0.05, inner_steps=2).meta_gradient(model, params, batch)
    assert rel_err(flat(fo.grads, params), flat(maml.grads, params)) > 1e-4


@pytest.mark.parametrize("rule", [MAML(inner_lr=0.05, inner_steps=2), FOMAML(inner_lr=0.05, inner_steps=2)])
def test_pre_and_post_adaptation_metrics_are_task_sums(rule):
    model, params, batch = small_setup()
    got = rule.meta_gradient(model, params, batch).metrics

    def loss(p, x, y):
        return float(torch.nn.functional.mse_loss(torch.func.functional_call(model, p, (x,)), y))

    before_s = sum(loss(params, batch.support_x[t], batch.support_y[t]) for t in range(3))
    before_q = sum(loss(params, batch.query_x[t], batch.query_y[t]) for t in range(3))
    assert got["support_loss_before"] == pytest.approx(before_s, rel=1e-12)
    assert got["query_loss_before"] == pytest.approx(before_q, rel=1e-12)
    assert got["support_loss_after"] < got["support_loss_before"]
