"""Reptile, ERM and R2-D2 against hand-computed values; vectorised == per-task loop for
every rule (float64)."""

import numpy as np
import pytest
import torch

from distmeta.algorithms import ALGORITHMS, ERM, R2D2, Reptile, ridge_head
from distmeta.models import conv4, linear, mlp
from distmeta.tasks import ImageClasses, Sinusoid
from distmeta.types import EpisodeBatch

D = 4


def linear_tasks(n_tasks=3, seed=0):
    rng = np.random.default_rng(seed)
    arr = lambda *s: torch.from_numpy(rng.standard_normal(s))  # noqa: E731
    return EpisodeBatch(arr(n_tasks, 6, D), arr(n_tasks, 6, 1), arr(n_tasks, 5, D), arr(n_tasks, 5, 1), "mse")


def grad_mse(theta, x, y):
    """d/dtheta mean((x theta - y)^2), by hand."""
    return 2 * x.T @ (x @ theta - y) / len(x)


def test_reptile_is_theta_minus_phi_k():
    model = linear(D).double()
    theta = np.array([0.3, -0.2, 0.5, 0.1])
    batch = linear_tasks()
    lr, steps = 0.1, 3
    expected = np.zeros(D)
    for t in range(batch.n_tasks):
        x, y = batch.support_x[t].numpy(), batch.support_y[t, :, 0].numpy()
        phi = theta.copy()
        for _ in range(steps):
            phi = phi - lr * grad_mse(phi, x, y)
        expected += theta - phi
    got = Reptile(inner_lr=lr, inner_steps=steps).meta_gradient(
        model, {"head.weight": torch.from_numpy(theta)[None]}, batch)
    np.testing.assert_allclose(got.grads["head.weight"][0].numpy(), expected, rtol=1e-12)


def test_erm_is_the_gradient_of_support_and_query_loss():
    model = linear(D).double()
    theta = np.array([0.3, -0.2, 0.5, 0.1])
    batch = linear_tasks()
    expected = np.zeros(D)
    for t in range(batch.n_tasks):
        x = np.concatenate([batch.support_x[t].numpy(), batch.query_x[t].numpy()])
        y = np.concatenate([batch.support_y[t, :, 0].numpy(), batch.query_y[t, :, 0].numpy()])
        expected += grad_mse(theta, x, y)
    got = ERM().meta_gradient(model, {"head.weight": torch.from_numpy(theta)[None]}, batch)
    np.testing.assert_allclose(got.grads["head.weight"][0].numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("n_points", [3, 20])  # fewer points than features (Woodbury), and more
def test_ridge_head_matches_explicit_solve(n_points):
    rng = np.random.default_rng(0)
    phi, y = rng.standard_normal((n_points, 8)), rng.standard_normal((n_points, 3))
    lam = 0.7
    explicit = np.linalg.inv(phi.T @ phi + lam * np.eye(8)) @ phi.T @ y
    got = ridge_head(torch.from_numpy(phi), torch.from_numpy(y), lam).numpy()
    np.testing.assert_allclose(got, explicit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n_points", [3, 20])
def test_ridge_head_solves_bf16_inputs_in_float32_with_autocast_off(n_points, monkeypatch):
    """What CUDA's autocast hands the head: bf16 features. The solve must see float32."""
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(2, n_points, 8, generator=g).bfloat16()
    y = torch.randn(2, n_points, 3, generator=g).bfloat16()
    seen = []
    solve = torch.linalg.solve
    monkeypatch.setattr(torch.linalg, "solve", lambda a, b: seen.append((a.dtype, b.dtype)) or solve(a, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ridge_head(phi, y, 0.7)
    assert got.dtype == torch.float32 and seen == [(torch.float32, torch.float32)]
    assert torch.equal(got, ridge_head(phi.float(), y.float(), 0.7))


def r2d2_setup():
    torch.manual_seed(0)
    model = mlp(in_features=2, hidden=(5,), out_features=3).double()
    rng = np.random.default_rng(1)
    sx, qx = rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 4, 2))
    sy, qy = rng.integers(0, 3, (3, 6)), rng.integers(0, 3, (3, 4))
    batch = EpisodeBatch(*(torch.from_numpy(a) for a in (sx, sy, qx, qy)), "cross_entropy")
    return model, batch


def test_r2d2_matches_explicit_ridge_loss_and_finite_differences():
    model, batch = r2d2_setup()
    rule = R2D2(lam=0.5, learn_lam=True, learn_scale=True)
    params = rule.init_params(model)
    params["rule.scale"] = torch.tensor(1.7, dtype=torch.float64)

    def objective(p):
        total = 0.0
        for t in range(batch.n_tasks):
            body = lambda x: torch.relu(x @ p["body.0.weight"].T + p["body.0.bias"])  # noqa: E731
            fs, fq = body(batch.support_x[t]), body(batch.query_x[t])
            y = torch.nn.functional.one_hot(batch.support_y[t], 3).double()
            lam = torch.exp(p["rule.log_lam"])
            w = torch.linalg.inv(fs.T @ fs + lam * torch.eye(5, dtype=torch.float64)) @ fs.T @ y
            logits = p["rule.scale"] * fq @ w
            total += float(torch.nn.functional.cross_entropy(logits, batch.query_y[t]))
        return total

    got = rule.meta_gradient(model, params, batch)
    assert got.metrics["query_loss"] == pytest.approx(objective(params), rel=1e-10)
    eps = 1e-6
    for name, value in params.items():
        fd = torch.zeros(value.numel(), dtype=torch.float64)
        for i in range(value.numel()):
            plus = {k: v.clone() for k, v in params.items()}
            minus = {k: v.clone() for k, v in params.items()}
            plus[name].view(-1)[i] += eps
            minus[name].view(-1)[i] -= eps
            fd[i] = (objective(plus) - objective(minus)) / (2 * eps)
        grad = got.grads[name].reshape(-1)
        if name.startswith("head."):
            assert float(grad.abs().max()) == 0.0  # the model's own head is replaced by the solve
        else:
            assert float((grad - fd).norm() / fd.norm()) < 1e-6, name


def sinusoid_batch():
    return Sinusoid(shots=5, query=5).sample(4, seed=3, step=0, shard=0).to(dtype=torch.float64)


def image_batch():
    images = np.random.default_rng(0).random((10, 6, 16, 16)).astype(np.float32)
    return ImageClasses(images, way=3, shot=1, query=2, rotations=True).sample(3, 0, 0, 0).to(dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("adapt", ["all", "head"])
@pytest.mark.parametrize("family", ["sinusoid", "images-max", "images-stride"])
def test_vectorised_equals_per_task_loop(name, adapt, family):
    torch.manual_seed(0)
    if family == "sinusoid":
        model, batch = mlp(hidden=(8, 8)).double(), sinusoid_batch()
    else:
        pool = family.split("-")[1]
        model, batch = conv4(3, image_size=16, hidden=4, pool=pool).double(), image_batch()
    if ALGORITHMS[name].classifies_only and family == "sinusoid":
        pytest.skip(f"{name} classifies; the sinusoid is regression")
    hyper = {} if name in ("r2d2", "protonet") else {"adapt": adapt, "inner_lr": 0.1}
    if name in ("maml", "fomaml", "imaml", "reptile", "metasgd", "kfo", "leap"):
        hyper["inner_steps"] = 2
    vec = ALGORITHMS[name](vectorize=True, **hyper)
    loop = ALGORITHMS[name](vectorize=False, **hyper)
    params = vec.init_params(model)
    a, b = vec.meta_gradient(model, params, batch), loop.meta_gradient(model, params, batch)
    assert a.grads.keys() == b.grads.keys() == params.keys()
    for k in a.grads:
        torch.testing.assert_close(a.grads[k], b.grads[k], rtol=1e-9, atol=1e-12)
    assert a.metrics.keys() == b.metrics.keys()
    for k in a.metrics:
        assert a.metrics[k] == pytest.approx(b.metrics[k], rel=1e-9)
    ea, eb = vec.evaluate(model, params, batch, steps=3), loop.evaluate(model, params, batch, steps=3)
    np.testing.assert_allclose(ea.query_loss, eb.query_loss, rtol=1e-9)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("vectorize", [True, False])
def test_a_step_without_metrics_has_the_same_gradient_bit_for_bit(name, vectorize):
    """The runtime asks for metrics on logged steps only: the gradient must not change."""
    torch.manual_seed(0)
    model, batch = conv4(3, image_size=16, hidden=4).double(), image_batch()
    hyper = {} if name in ("r2d2", "protonet") else {"inner_lr": 0.1}
    if name in ("maml", "fomaml", "imaml", "reptile", "metasgd", "kfo", "leap"):
        hyper["inner_steps"] = 2
    rule = ALGORITHMS[name](vectorize=vectorize, **hyper)
    params = rule.init_params(model)
    full, bare = rule.meta_gradient(model, params, batch, 3), rule.meta_gradient(model, params, batch, 3, metrics=False)
    assert full.metrics and "query_loss" in full.metrics and bare.metrics == {}
    assert full.grads.keys() == bare.grads.keys()
    assert all(torch.equal(full.grads[k], bare.grads[k]) for k in full.grads)


def test_chunked_vmap_equals_unchunked():
    torch.manual_seed(0)
    model, batch = mlp(hidden=(8, 8)).double(), sinusoid_batch()
    full = ALGORITHMS["maml"](inner_lr=0.1)
    chunked = ALGORITHMS["maml"](inner_lr=0.1, chunk_size=3)
    params = full.init_params(model)
    a, b = full.meta_gradient(model, params, batch), chunked.meta_gradient(model, params, batch)
    for k in a.grads:
        torch.testing.assert_close(a.grads[k], b.grads[k], rtol=1e-10, atol=1e-12)
