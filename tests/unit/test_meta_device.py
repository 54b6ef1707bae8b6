"""The engine, every rule and every model create their tensors on the device of their inputs,
and a shard's meta-gradient synchronises with the host only to read a logged step's metrics.

Run on PyTorch's ``meta`` device: tensors with shapes and no data. A tensor created on the
CPU meets a meta tensor and fails; reading a value (``float()``, ``.item()``, ``int(y.max())``,
an ``if`` on a tensor) fails: what would be a host synchronisation on a GPU."""

import numpy as np
import pytest

import distmeta.algorithms.base as base
from distmeta.algorithms import ALGORITHMS
from distmeta.models import conv4, mlp, resnet12, resnet18
from distmeta.tasks import ImageClasses, Sinusoid

MODELS = {
    "mlp": lambda: mlp(hidden=(8, 8)),
    "conv4": lambda: conv4(3, image_size=16, hidden=4),
    "resnet12": lambda: resnet12(3, in_channels=1, image_size=16, channels=(2, 3, 4, 5), drop_rate=0.1, block_size=2),
    "resnet18": lambda: resnet18(3, in_channels=1, image_size=32, channels=(2, 3, 4, 5)),
}
SIZES = {"resnet18": 32}


def batches(model, n=2):
    if model == "mlp":
        source = Sinusoid(shots=5, query=5)
    else:
        size = SIZES.get(model, 16)
        images = np.random.default_rng(0).random((10, 6, size, size)).astype(np.float32)
        source = ImageClasses(images, way=3, shot=1, query=2)
    return [source.sample(3, 0, 0, s).to("meta") for s in range(n)]


def cases():
    """Every rule on every model, vectorised and per task; on ResNet-12 the per-task loop is
    the model's own forward, which MAML covers; ResNet-18 (Meta-Dataset's) under its rules."""
    yield from (("resnet18", name, True) for name in ("fo_proto_maml", "maml", "protonet"))
    for model in (m for m in MODELS if m != "resnet18"):
        for name in sorted(ALGORITHMS):
            for vectorize in (True, False):
                if not (ALGORITHMS[name].classifies_only and model == "mlp") and (vectorize or model != "resnet12" or name == "maml"):
                    yield model, name, vectorize


@pytest.mark.parametrize("model_name,name,vectorize", list(cases()))
def test_a_meta_gradient_runs_on_the_meta_device_without_reading_a_value(model_name, name, vectorize):
    model = MODELS[model_name]().to("meta").train()
    rule = ALGORITHMS[name](vectorize=vectorize)
    params = rule.init_params(model)
    assert all(v.is_meta for v in params.values())
    out = rule.shard_gradients(model, params, batches(model_name), 0, metrics=False)
    for mg in out:
        assert mg.metrics == {} and mg.grads.keys() == params.keys()
        assert all(g.is_meta and g.shape == params[k].shape for k, g in mg.grads.items())


@pytest.mark.parametrize("name", ["maml", "r2d2"])
def test_a_logged_step_reads_its_metrics_in_one_copy(name, monkeypatch):
    """With metrics, the only read of a value is :func:`host_floats`, once per call."""
    calls = []

    def zeros(sums):
        calls.append(sorted(sums))
        return {k: 0.0 for k in sums}

    monkeypatch.setattr(base, "host_floats", zeros)
    model = MODELS["conv4"]().to("meta")
    rule = ALGORITHMS[name]()
    params = rule.init_params(model)
    mg = rule.meta_gradient(model, params, batches("conv4", 1)[0], 0, metrics=True)
    assert len(calls) == 1 and "query_loss" in calls[0] and set(mg.metrics) == set(calls[0])
