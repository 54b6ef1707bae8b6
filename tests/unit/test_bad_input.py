"""Bad input raises errors whose messages name the problem. Rules and models are built the
way every run builds them: from a config (``distmeta.config``, through ``distmeta.plugins``)."""

import json
import re

import pytest
import torch

from distmeta.algorithms import MAML
from distmeta.algorithms.registry import ALGORITHMS
from distmeta.config import load_config
from distmeta.models import mlp
from distmeta.tasks import Sinusoid
from distmeta.types import EpisodeBatch


def overrides(section: str, key: str, name: str, **kwargs) -> list[str]:
    return [f"{section}.{key}={name}", *(f"{section}.{k}={json.dumps(v)}" for k, v in kwargs.items())]


def build_algorithm(name: str, **hyper):
    return load_config(None, overrides("algorithm", "name", name, **hyper)).algorithm.build()


def build_model(name: str, **kwargs):
    return load_config(None, overrides("model", "name", name, **kwargs)).model.build()


def test_unknown_rule_lists_the_valid_ones():
    assert {"maml", "protonet", "proto_maml", "fo_proto_maml"} <= set(ALGORITHMS)
    with pytest.raises(ValueError, match=r"'mammal'.*" + re.escape(str(sorted(ALGORITHMS)))):
        build_algorithm("mammal")


def test_unknown_hyper_parameter_is_named():
    with pytest.raises(ValueError, match="inner_lrr"):
        build_algorithm("maml", inner_lrr=0.1)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="resnet"):
        build_model("resnet")


def test_unknown_conv4_pooling_is_named():
    with pytest.raises(ValueError, match=r"model.pool='avg'.*\['max', 'stride'\]"):
        build_model("conv4", n_way=5, pool="avg")


@pytest.mark.parametrize("lr", [-0.1, 0.0])
def test_non_positive_learning_rate(lr):
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(inner_lr=lr)


@pytest.mark.parametrize("name", ["maml", "fomaml", "imaml", "reptile"])
def test_zero_inner_steps_for_an_adapting_rule(name):
    with pytest.raises(ValueError, match="inner_steps=0"):
        build_algorithm(name, inner_steps=0)


def test_erm_accepts_zero_inner_steps():
    assert build_algorithm("erm", inner_steps=0).inner_steps == 0


def test_bad_adapt_value():
    with pytest.raises(ValueError, match="adapt"):
        MAML(adapt="body")
    model = mlp()
    rule = MAML(adapt=["head.weight", "nope"])
    with pytest.raises(ValueError, match="nope"):
        rule.meta_gradient(model, rule.init_params(model), Sinusoid().sample(2, 0, 0, 0))


def test_mismatched_support_and_query_shapes():
    good = Sinusoid(shots=5, query=5).sample(3, 0, 0, 0)
    with pytest.raises(ValueError, match="task dimension"):
        EpisodeBatch(good.support_x, good.support_y, good.query_x[:2], good.query_y[:2])
    with pytest.raises(ValueError, match="support_x .* support_y"):
        EpisodeBatch(good.support_x, good.support_y[:, :4], good.query_x, good.query_y)
    with pytest.raises(ValueError, match="input shapes"):
        EpisodeBatch(good.support_x, good.support_y, torch.zeros(3, 5, 2), good.query_y)


def test_nan_in_the_data_is_named():
    good = Sinusoid(shots=5, query=5).sample(3, 0, 0, 0)
    bad_x = good.query_x.clone()
    bad_x[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"query_x holds 1 non-finite"):
        EpisodeBatch(good.support_x, good.support_y, bad_x, good.query_y)


def test_classification_needs_integer_labels():
    good = Sinusoid(shots=5, query=5).sample(3, 0, 0, 0)
    with pytest.raises(ValueError, match="integer class labels"):
        EpisodeBatch(good.support_x, good.support_y, good.query_x, good.query_y, "cross_entropy")


def test_bf16_on_the_per_task_loop_is_refused_naming_both_keys():
    """bf16 on the per-task loop computes every convolution in bf16: meta-gradients far off."""
    with pytest.raises(ValueError, match=r"runtime.precision=bf16 with algorithm.vectorize=false.*runtime.precision=float32"):
        load_config(None, ["runtime.precision=bf16", "algorithm.vectorize=false"])
    assert load_config(None, ["runtime.precision=bf16"]).runtime.precision == "bf16"
    assert load_config(None, ["algorithm.vectorize=false"]).algorithm.kwargs["vectorize"] is False


def test_batches_taken_from_a_checked_one_do_not_read_its_values_again(monkeypatch):
    """A slice, a move or a concatenation of checked batches is checked for shapes only (a
    read of the values is a host synchronisation on a GPU); a cast is checked again."""
    batch = Sinusoid(shots=5, query=5).sample(4, 0, 0, 0)
    reads = []
    monkeypatch.setattr(EpisodeBatch, "_check_finite", lambda self: reads.append(self.n_tasks))
    parts = [batch.slice(0, 2), batch.slice(2, 4)]
    joined = EpisodeBatch.cat(parts).to("cpu", torch.float32)
    assert reads == [] and torch.equal(joined.query_y, batch.query_y) and joined.n_tasks == 4
    batch.to(dtype=torch.float64)
    assert reads == [4]
    with pytest.raises(ValueError, match="task dimension differs"):
        batch._derived(batch.support_x, batch.support_y[:2], batch.query_x, batch.query_y)
