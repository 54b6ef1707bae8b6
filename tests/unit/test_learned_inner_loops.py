"""Rules that learn their inner update (Meta-SGD, MAML++, Meta-KFO), Leap and ProtoNets,
each against an independent reference in float64: an explicit per-task autograd loop of the
rule's own objective, central finite differences of it, closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from distmeta.algorithms import FOMAML, KFO, MAML, Leap, MetaSGD, ProtoNet
from distmeta.algorithms.maml import msl_weights
from distmeta.models import conv4, linear, mlp
from distmeta.tasks import ImageClasses, Sinusoid
from distmeta.types import EpisodeBatch


def sine():
    return Sinusoid(shots=4, query=4).sample(3, seed=1, step=0, shard=0).to(dtype=torch.float64)


def small_mlp():
    torch.manual_seed(0)
    return mlp(hidden=(4,)).double()


def task_loss(model, p, x, y):
    out = functional_call(model, {k: v for k, v in p.items() if not k.startswith("rule.")}, (x,))
    return torch.nn.functional.mse_loss(out, y.reshape(out.shape))


def unrolled(model, params, batch, step_fn, steps, weights=None):
    """Sum over tasks of the query loss after ``steps`` explicit inner steps (or the
    ``weights``-weighted sum over steps), on the autograd graph: the reference."""
    names = [k for k in params if not k.startswith("rule.")]
    total = 0.0
    for t in range(batch.n_tasks):
        fast = {n: params[n] for n in names}
        for k in range(steps):
            loss = task_loss(model, {**params, **fast}, batch.support_x[t], batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=True)
            fast = {n: step_fn(n, fast[n], g, k) for n, g in zip(names, grads, strict=True)}
            if weights is not None:
                total = total + weights[k] * task_loss(model, {**params, **fast}, batch.query_x[t], batch.query_y[t])
        if weights is None:
            total = total + task_loss(model, {**params, **fast}, batch.query_x[t], batch.query_y[t])
    return total


def _leaves(params):
    return {k: v.requires_grad_(True) for k, v in params.items()}


def check(rule, model, params, batch, reference, fd_entries=6):
    """The rule's gradient equals autograd of the reference (rel 1e-10), and both equal
    central finite differences of the reference's value on a few entries of every tensor."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    expected = dict(zip(leaves, torch.autograd.grad(reference(leaves), list(leaves.values()), allow_unused=True),
                        strict=True))
    got = rule.meta_gradient(model, params, batch).grads
    for k in params:
        want = torch.zeros_like(params[k]) if expected[k] is None else expected[k]
        assert float((got[k] - want).norm()) <= 1e-10 * float(want.norm()) + 1e-12, k
        eps = 1e-6
        for i in range(min(fd_entries, params[k].numel())):
            plus = {n: v.detach().clone() for n, v in params.items()}
            minus = {n: v.detach().clone() for n, v in params.items()}
            plus[k].view(-1)[i] += eps
            minus[k].view(-1)[i] -= eps
            fd = (float(reference(_leaves(plus))) - float(reference(_leaves(minus)))) / (2 * eps)
            assert got[k].reshape(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), (k, i)


def test_meta_sgd_learns_per_parameter_rates():
    model, batch = small_mlp(), sine()
    rule = MetaSGD(inner_lr=0.05, inner_steps=2)
    params = rule.init_params(model)
    assert params["rule.lr.body.0.weight"].shape == params["body.0.weight"].shape
    params = {k: v + 0.02 * torch.rand_like(v) if k.startswith("rule.") else v for k, v in params.items()}
    check(rule, model, params, batch,
          lambda p: unrolled(model, p, batch, lambda n, w, g, k: w - p["rule.lr." + n] * g, 2))


def test_maml_plus_plus_lslr_is_maml_at_its_initial_rates_and_learns_them():
    model, batch = small_mlp(), sine()
    plain, lslr = MAML(inner_lr=0.05, inner_steps=3), MAML(inner_lr=0.05, inner_steps=3, lslr=True)
    params = lslr.init_params(model)
    a, b = plain.meta_gradient(model, plain.init_params(model), batch), lslr.meta_gradient(model, params, batch)
    assert all(torch.allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=0) for k in a.grads)
    params["rule.lslr.head.weight"] = torch.tensor([0.05, 0.02, 0.08], dtype=torch.float64)
    check(lslr, model, params, batch,
          lambda p: unrolled(model, p, batch, lambda n, w, g, k: w - p["rule.lslr." + n][k] * g, 3))


def test_maml_plus_plus_multi_step_loss_and_derivative_order_annealing():
    weights = msl_weights(4, 0, 100)
    assert weights == pytest.approx([0.25] * 4)
    late = msl_weights(4, 100, 100)
    assert late[:3] == pytest.approx([0.0075] * 3) and sum(late) == pytest.approx(1.0)
    model, batch = small_mlp(), sine()
    rule = MAML(inner_lr=0.05, inner_steps=3, msl_steps=10)
    params = rule.init_params(model)
    w = msl_weights(3, 4, 10)
    reference = lambda p: unrolled(model, p, batch, lambda n, x, g, k: x - 0.05 * g, 3, weights=w)  # noqa: E731
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    expected = torch.autograd.grad(reference(leaves), list(leaves.values()))
    got = rule.meta_gradient(model, params, batch, step=4).grads
    for k, e in zip(leaves, expected, strict=True):
        assert float((got[k] - e).norm()) <= 1e-10 * float(e.norm())
    after = rule.meta_gradient(model, params, batch, step=10).grads  # MSL over: plain MAML
    maml = MAML(inner_lr=0.05, inner_steps=3).meta_gradient(model, params, batch).grads
    assert all(torch.equal(after[k], maml[k]) for k in maml)
    da = MAML(inner_lr=0.05, inner_steps=3, first_order_steps=5)
    first = FOMAML(inner_lr=0.05, inner_steps=3).meta_gradient(model, params, batch).grads
    assert all(torch.equal(da.meta_gradient(model, params, batch, step=4).grads[k], first[k]) for k in first)
    assert all(torch.equal(da.meta_gradient(model, params, batch, step=5).grads[k], maml[k]) for k in maml)


def kfo_step(p, n, w, g):
    left, right = p["rule.kfo.L." + n], p["rule.kfo.R." + n]
    if g.dim() == 1:
        return w - 0.05 * (left @ g[:, None] @ right)[:, 0]
    return w - 0.05 * (left @ g @ right)


def test_meta_kfo_is_maml_at_identity_factors_and_learns_them():
    model, batch = small_mlp(), sine()
    rule = KFO(inner_lr=0.05, inner_steps=2)
    params = rule.init_params(model)
    assert params["rule.kfo.L.body.0.weight"].shape == (4, 4) and params["rule.kfo.R.body.0.weight"].shape == (1, 1)
    assert params["rule.kfo.L.body.0.bias"].shape == (4, 4) and params["rule.kfo.R.head.weight"].shape == (4, 4)
    maml = MAML(inner_lr=0.05, inner_steps=2).meta_gradient(model, MAML().init_params(model), batch).grads
    got = rule.meta_gradient(model, params, batch).grads
    assert all(torch.allclose(got[k], maml[k], rtol=1e-12, atol=1e-15) for k in maml)
    gen = torch.Generator().manual_seed(3)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if k.startswith("rule.") else v
              for k, v in params.items()}
    check(rule, model, params, batch, lambda p: unrolled(model, p, batch, lambda n, w, g, k: kfo_step(p, n, w, g), 2))


def test_meta_kfo_on_convolutions_is_maml_at_identity_and_anil_kfo_transforms_the_head_only():
    torch.manual_seed(0)
    model = conv4(3, image_size=16, hidden=4).double()
    images = np.random.default_rng(0).random((6, 4, 16, 16))
    batch = ImageClasses(images, 3, 1, 2).sample(2, 0, 0, 0).to(dtype=torch.float64)
    rule = KFO(inner_lr=0.1, inner_steps=2)
    params = rule.init_params(model)
    assert params["rule.kfo.L.body.0.0.weight"].shape == (1, 1) and params["rule.kfo.R.body.0.0.weight"].shape == (9, 9)
    maml = MAML(inner_lr=0.1, inner_steps=2).meta_gradient(model, MAML().init_params(model), batch).grads
    got = rule.meta_gradient(model, params, batch).grads
    assert all(torch.allclose(got[k], maml[k], rtol=1e-11, atol=1e-14) for k in maml)
    anil = KFO(inner_lr=0.1, adapt="head").init_params(model)
    assert sorted(k for k in anil if k.startswith("rule.")) == [
        "rule.kfo.L.head.bias", "rule.kfo.L.head.weight", "rule.kfo.R.head.bias", "rule.kfo.R.head.weight"]


def quadratic_tasks(n_tasks=2, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_tasks, 8, d))
    w_star = rng.standard_normal((n_tasks, d))
    y = np.einsum("tnd,td->tn", x, w_star)[..., None]
    t = torch.from_numpy
    return EpisodeBatch(t(x), t(y), t(x), t(y), "mse"), x, w_star


@pytest.mark.parametrize("norm,loss_dim,stabilise", [(True, True, True), (False, True, False), (True, False, True)])
def test_leap_is_the_path_length_gradient_of_the_closed_form_path(norm, loss_dim, stabilise):
    """On L(w) = mean((X w - y)^2) with y = X w*, gradient descent is w_i = w* + M^i (w_0 - w*),
    M = I - 2 a X^T X / n: Leap's meta-gradient from that path and the formula of the paper."""
    batch, x, w_star = quadratic_tasks()
    d, lr, steps = 3, 0.05, 6
    w0 = np.array([0.4, -0.3, 0.2])
    expected = np.zeros(d)
    for t in range(batch.n_tasks):
        a = x[t].T @ x[t] / len(x[t])
        m = np.eye(d) - 2 * lr * a
        path = [w_star[t] + np.linalg.matrix_power(m, i) @ (w0 - w_star[t]) for i in range(steps + 1)]
        loss = [float((p - w_star[t]) @ a @ (p - w_star[t])) for p in path]
        for i in range(steps):
            d_loss = loss[i + 1] - loss[i]
            d_loss = -abs(d_loss) if stabilise else d_loss
            d_loss = d_loss if loss_dim else 0.0
            grad = 2 * a @ (path[i] - w_star[t])
            delta = (path[i] - path[i + 1]) - d_loss * grad
            if norm:
                delta = delta / np.sqrt(np.sum((path[i + 1] - path[i]) ** 2) + d_loss ** 2)
            expected += delta
    rule = Leap(inner_lr=lr, inner_steps=steps, norm=norm, loss_dim=loss_dim, stabilise=stabilise)
    got = rule.meta_gradient(linear(d).double(), {"head.weight": torch.from_numpy(w0)[None]}, batch)
    np.testing.assert_allclose(got.grads["head.weight"][0].numpy(), expected, rtol=1e-10)


def test_leap_memory_does_not_grow_with_the_inner_steps():
    from benchmarks.memory import peak_allocated_bytes

    torch.manual_seed(0)
    model, batch = mlp(hidden=(64, 64)).double(), sine()
    params = Leap().init_params(model)

    def peak(rule):
        return peak_allocated_bytes(lambda: rule.meta_gradient(model, params, batch), per_allocation=True)

    leap = [peak(Leap(inner_lr=0.01, inner_steps=k)) for k in (3, 40)]  # two steps are held at a time
    maml = [peak(MAML(inner_lr=0.01, inner_steps=k)) for k in (2, 20)]
    assert leap[1] <= 1.02 * leap[0] and maml[1] > 3 * maml[0]


def test_protonet_is_the_prototype_loss_of_an_explicit_loop():
    torch.manual_seed(0)
    model = mlp(in_features=2, hidden=(5,), out_features=3).double()
    rng = np.random.default_rng(1)
    sx, qx = rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 4, 2))
    sy = np.tile(np.arange(3), (3, 2))
    qy = rng.integers(0, 3, (3, 4))
    batch = EpisodeBatch(*(torch.from_numpy(a) for a in (sx, sy, qx, qy)), "cross_entropy")
    rule = ProtoNet()

    def reference(p):
        total = 0.0
        for t in range(batch.n_tasks):
            body = lambda v: torch.relu(v @ p["body.0.weight"].T + p["body.0.bias"])  # noqa: E731
            fs, fq = body(batch.support_x[t]), body(batch.query_x[t])
            protos = torch.stack([fs[batch.support_y[t] == k].mean(0) for k in range(3)])
            logits = -torch.cdist(fq, protos) ** 2
            total = total + torch.nn.functional.cross_entropy(logits, batch.query_y[t])
        return total

    check(rule, model, rule.init_params(model), batch, reference)


def test_maml_plus_plus_per_step_batchnorm_weights():
    torch.manual_seed(0)
    model = conv4(3, image_size=16, hidden=3).double()
    images = np.random.default_rng(0).random((6, 4, 16, 16))
    batch = ImageClasses(images, 3, 1, 2).sample(2, 0, 0, 0).to(dtype=torch.float64)
    rule = MAML(inner_lr=0.1, inner_steps=2, bn_per_step=True)
    params = rule.init_params(model)
    assert "rule.bnwb.1.body.0.1.weight" in params and "rule.bnwb.2.body.3.1.bias" in params
    gen = torch.Generator().manual_seed(1)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if k.startswith("rule.") else v
              for k, v in params.items()}
    bn = {k.split(".", 3)[3] for k in params if k.startswith("rule.bnwb.")}

    def reference(p):
        names = [k for k in p if not k.startswith("rule.")]
        total = 0.0
        for t in range(batch.n_tasks):
            fast = {n: p[n] for n in names}

            def loss(params, x, y):
                return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

            for k in range(2):
                grads = torch.autograd.grad(loss(fast, batch.support_x[t], batch.support_y[t]),
                                            [fast[n] for n in names], create_graph=True)
                fast = {n: p[f"rule.bnwb.{k + 1}.{n}"] if n in bn else fast[n] - 0.1 * g
                        for n, g in zip(names, grads, strict=True)}
            total = total + loss(fast, batch.query_x[t], batch.query_y[t])
        return total

    check(rule, model, params, batch, reference, fd_entries=1)
    ckpt = MAML(inner_lr=0.1, inner_steps=2, bn_per_step=True, checkpoint_inner=True)
    plain = rule.meta_gradient(model, params, batch).grads
    assert all(torch.allclose(ckpt.meta_gradient(model, params, batch).grads[k], plain[k], rtol=1e-12, atol=1e-15)
               for k in plain)
