"""Task families: determinism in (seed, step, shard), shapes, rotations, B*."""

import numpy as np
import pytest
import torch

from distmeta.models import linear_rep, representation
from distmeta.tasks import ImageClasses, LinearRepresentation, Sinusoid, principal_angle_distance


def same(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("support_x", "support_y", "query_x", "query_y"))


@pytest.mark.parametrize("family", [
    Sinusoid(shots=5, query=3),
    LinearRepresentation(d=8, k=2, noise=0.1),
    ImageClasses(np.random.default_rng(0).random((12, 5, 8, 8)), way=3, shot=1, query=2, rotations=True),
])
def test_same_seed_step_shard_gives_same_episodes(family):
    a, b = family.sample(4, seed=7, step=3, shard=1), family.sample(4, seed=7, step=3, shard=1)
    assert same(a, b)
    assert not same(a, family.sample(4, seed=7, step=4, shard=1))
    assert not same(a, family.sample(4, seed=7, step=3, shard=2))
    assert not same(a, family.sample(4, seed=8, step=3, shard=1))


def test_sinusoid_ranges_and_shapes():
    batch = Sinusoid(shots=5, query=3).sample(50, 0, 0, 0)
    assert batch.support_x.shape == (50, 5, 1) and batch.query_y.shape == (50, 3, 1)
    assert float(batch.support_x.abs().max()) <= 5.0
    assert float(batch.support_y.abs().max()) <= 5.0
    assert batch.loss == "mse"


def test_image_tasks_labels_and_rotations():
    base = np.zeros((3, 4, 6, 6), dtype=np.float32)
    for c in range(3):
        base[c, :, 0, c] = 1.0  # one lit pixel per class, on the top row
    family = ImageClasses(base, way=12, shot=1, query=3, rotations=True)
    assert family.n_classes == 12
    episodes = family.draw(2, np.random.default_rng(0))
    batch = episodes.batch()
    assert batch.support_x.shape == (2, 12, 1, 6, 6) and batch.query_x.shape == (2, 36, 1, 6, 6)
    assert sorted(batch.support_y[0].tolist()) == list(range(12))
    for t in range(2):
        for label, pool_class in enumerate(episodes.classes[t]):
            img = batch.support_x[t, label, 0].numpy()
            expected = np.rot90(base[pool_class % 3, 0], k=pool_class // 3)
            np.testing.assert_array_equal(img, expected)
            assert (batch.query_y[t][batch.query_y[t] == label]).numel() == 3


def test_image_tasks_reject_impossible_requests():
    with pytest.raises(ValueError, match="way=6"):
        ImageClasses(np.zeros((5, 4, 6, 6)), way=6, shot=1, query=1)
    with pytest.raises(ValueError, match="smallest class has only 4 images"):
        ImageClasses(np.zeros((5, 4, 6, 6)), way=2, shot=2, query=3)


def test_principal_angle_distance():
    family = LinearRepresentation(d=10, k=3)
    b_star = family.b_star
    assert principal_angle_distance(b_star @ np.diag([2.0, 3.0, -1.0]), b_star) < 1e-12
    orth = np.linalg.qr(np.concatenate([b_star, np.random.default_rng(0).standard_normal((10, 3))], 1))[0][:, 3:]
    assert principal_angle_distance(orth, b_star) == pytest.approx(1.0)


def test_linear_rep_model_exposes_its_representation():
    model = linear_rep(6, 2, linear_layers=2)
    params = dict(model.named_parameters())
    b = representation(model, params)
    assert b.shape == (6, 2)
    x = torch.randn(4, 6)
    torch.testing.assert_close(model(x), (x @ b) @ params["head.weight"].T)
