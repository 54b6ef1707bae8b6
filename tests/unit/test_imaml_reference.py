"""iMAML against the exact implicit gradient on quadratic inner problems (float64)."""

from functools import partial

import pytest
import torch

from benchmarks.memory import peak_allocated_bytes
from distmeta.algorithms import IMAML, MAML
from distmeta.models import linear, linear_rep, mlp
from distmeta.tasks import LinearRepresentation, Sinusoid
from distmeta.types import EpisodeBatch

D = 6


def quadratic_batch(n_tasks=3, seed=0):
    """Linear regression tasks: L(phi) = mean((X phi - y)^2) is quadratic in phi."""
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(n_tasks, 12, D, generator=g, dtype=torch.float64)
    qx = torch.randn(n_tasks, 9, D, generator=g, dtype=torch.float64)
    sy = torch.randn(n_tasks, 12, 1, generator=g, dtype=torch.float64)
    qy = torch.randn(n_tasks, 9, 1, generator=g, dtype=torch.float64)
    return EpisodeBatch(sx, sy, qx, qy, "mse")


def exact_implicit_gradient(theta, batch, lam):
    """Closed form: phi* = (H + lam I)^-1 (b + lam theta) with H = 2 X^T X / n, b = 2 X^T y / n;
    the meta-gradient is (I + H/lam)^-1 grad L_query(phi*), summed over tasks."""
    total = torch.zeros(D, dtype=torch.float64)
    eye = torch.eye(D, dtype=torch.float64)
    for t in range(batch.n_tasks):
        x, y = batch.support_x[t], batch.support_y[t, :, 0]
        h, b = 2 * x.T @ x / len(x), 2 * x.T @ y / len(x)
        phi = torch.linalg.solve(h + lam * eye, b + lam * theta)
        xq, yq = batch.query_x[t], batch.query_y[t, :, 0]
        gq = 2 * xq.T @ (xq @ phi - yq) / len(xq)
        total += torch.linalg.solve(eye + h / lam, gq)
    return total


def linear_params(seed=1):
    model = linear(D).double()
    theta = torch.randn(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return model, {"head.weight": theta[None].clone()}, theta


def test_imaml_equals_closed_form_implicit_gradient():
    model, params, theta = linear_params()
    batch = quadratic_batch()
    lam = 2.0
    rule = IMAML(inner_lr=0.05, inner_steps=400, lam=lam, cg_steps=D)
    got = rule.meta_gradient(model, params, batch).grads["head.weight"][0]
    exact = exact_implicit_gradient(theta, batch, lam)
    assert float((got - exact).norm() / exact.norm()) < 1e-8


def test_imaml_converges_as_cg_steps_grow():
    model, params, theta = linear_params()
    batch = quadratic_batch()
    lam = 0.5
    exact = exact_implicit_gradient(theta, batch, lam)
    errors = []
    for cg in (1, 2, 4, D):
        got = IMAML(inner_lr=0.05, inner_steps=600, lam=lam, cg_steps=cg).meta_gradient(model, params, batch)
        errors.append(float((got.grads["head.weight"][0] - exact).norm() / exact.norm()))
    assert errors[0] > 1e-3
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-8


def test_imaml_frozen_body_gradient_matches_finite_differences():
    """With ``adapt: head`` the body moves phi* too; its gradient comes from the implicit
    function theorem. Check it against finite differences of L_query(phi*(theta))."""
    torch.manual_seed(0)
    model = linear_rep(5, 2).double()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch = LinearRepresentation(d=5, k=2, noise=0.1, m_support=8, m_query=8).sample(3, 0, 0, 0).to(dtype=torch.float64)
    lam = 1.0
    rule = IMAML(inner_lr=0.1, inner_steps=800, lam=lam, cg_steps=4, adapt="head")
    got = rule.meta_gradient(model, params, batch).grads

    def objective(p):
        total = 0.0
        for t in range(batch.n_tasks):
            feats_s = batch.support_x[t] @ p["body.weight"].T
            feats_q = batch.query_x[t] @ p["body.weight"].T
            h = 2 * feats_s.T @ feats_s / len(feats_s)
            b = 2 * feats_s.T @ batch.support_y[t, :, 0] / len(feats_s)
            w = torch.linalg.solve(h + lam * torch.eye(2, dtype=torch.float64), b + lam * p["head.weight"][0])
            total += float(((feats_q @ w - batch.query_y[t, :, 0]) ** 2).mean())
        return total

    eps = 1e-6
    for name in params:
        fd = torch.zeros_like(params[name]).reshape(-1)
        for i in range(fd.numel()):
            plus = {k: v.clone() for k, v in params.items()}
            minus = {k: v.clone() for k, v in params.items()}
            plus[name].view(-1)[i] += eps
            minus[name].view(-1)[i] -= eps
            fd[i] = (objective(plus) - objective(minus)) / (2 * eps)
        assert float((got[name].reshape(-1) - fd).norm() / fd.norm()) < 1e-6, name


def test_imaml_memory_is_flat_in_inner_steps_and_maml_grows():
    model = mlp(hidden=(64, 64))
    batch = Sinusoid(shots=10, query=10).sample(8, seed=0, step=0, shard=0)
    peaks = {}
    for rule_cls in (IMAML, MAML):
        for k in (1, 16):
            rule = rule_cls(inner_lr=0.01, inner_steps=k)
            params = rule.init_params(model)
            peaks[rule_cls.__name__, k] = peak_allocated_bytes(partial(rule.meta_gradient, model, params, batch))
    assert peaks["IMAML", 16] <= 1.2 * peaks["IMAML", 1], peaks
    assert peaks["MAML", 16] >= 4 * peaks["MAML", 1], peaks


def test_cg_handles_a_zero_right_hand_side():
    model, params, _ = linear_params()
    batch = quadratic_batch()
    zero_query = EpisodeBatch(batch.support_x, batch.support_y, batch.query_x * 0, batch.query_y * 0, "mse")
    got = IMAML(inner_lr=0.05, inner_steps=5, lam=1.0, cg_steps=3).meta_gradient(
        model, {"head.weight": torch.zeros(1, D, dtype=torch.float64)}, zero_query)
    assert torch.isfinite(got.grads["head.weight"]).all()


@pytest.mark.parametrize("bad", [{"lam": 0.0}, {"cg_steps": 0}, {"damping": -1.0}])
def test_imaml_rejects_bad_hyper_parameters(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        IMAML(**bad)
