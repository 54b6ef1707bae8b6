"""The outer-gradient options (``checkpoint_inner``, ``msl_steps``, ``first_order_steps``) and
per-step BatchNorm weights (``bn_per_step``) for every rule whose gradient goes through the
loop: MAML, MAML++ (``lslr``), Meta-SGD and Meta-KFO, in float64.

References: an explicit per-task autograd loop of each rule's own inner step (second order:
autograd of the objective through the loop; first order: every step detached and each
weighted query loss differentiated at its own step's end); the plain (uncheckpointed)
gradient, bit for bit, for checkpointing; the per-task loop for the vectorised engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from distmeta.algorithms import ALGORITHMS, FOMAML, MetaSGD
from distmeta.algorithms.maml import msl_weights
from distmeta.models import conv4, mlp, resnet12
from distmeta.tasks import ImageClasses, Sinusoid

LR, STEPS = 0.05, 3
SPECS = {"maml": ("maml", {}), "maml++": ("maml", {"lslr": True}), "metasgd": ("metasgd", {}), "kfo": ("kfo", {})}


def family(name):
    """(model, batch) of the sinusoid MLP or a small Conv4 on random 3-way 1-shot images."""
    torch.manual_seed(0)
    if name == "sine":
        return mlp(hidden=(6,)).double(), Sinusoid(shots=4, query=4).sample(3, seed=1, step=0, shard=0).to(
            dtype=torch.float64)
    images = np.random.default_rng(0).random((6, 4, 16, 16))
    return conv4(3, image_size=16, hidden=3).double(), ImageClasses(images, 3, 1, 2).sample(2, 0, 0, 0).to(
        dtype=torch.float64)


def rule_of(spec, **options):
    name, own = SPECS[spec]
    return ALGORITHMS[name](inner_lr=LR, inner_steps=STEPS, **own, **options)


def moved(params, seed=1):
    """The rule's meta-parameters moved off their initial values (Meta-KFO at the identity,
    rates all equal to inner_lr and BatchNorm copies equal to the model's hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in params.items():
        noise = torch.rand(v.shape, generator=gen, dtype=v.dtype)
        if k.startswith(("rule.lr.", "rule.lslr.")):
            out[k] = v * (0.6 + 0.8 * noise)
        elif k.startswith("rule."):
            out[k] = v + 0.2 * (noise - 0.5)
        else:
            out[k] = v
    return out


# -- the explicit reference ----------------------------------------------------------------
def loss_of(model, kind, p, x, y):
    out = functional_call(model, {k: v for k, v in p.items() if not k.startswith("rule.")}, (x,))
    if kind == "mse":
        return torch.nn.functional.mse_loss(out, y.reshape(out.shape))
    return torch.nn.functional.cross_entropy(out, y)


def kronecker(left, g, right):
    if g.dim() == 1:
        return (left @ g[:, None] @ right)[:, 0]
    if g.dim() == 4:
        return (left @ g.reshape(g.shape[0], g.shape[1], -1) @ right).reshape(g.shape)
    return left @ g @ right


def step_of(spec, p):
    """The rule's inner step for parameter ``n`` at step ``k``, written out."""
    def step(n, w, g, k):
        if spec == "metasgd":
            return w - p["rule.lr." + n] * g
        if spec == "kfo":
            return w - LR * kronecker(p["rule.kfo.L." + n], g, p["rule.kfo.R." + n])
        if spec == "maml++":
            return w - p["rule.lslr." + n][min(k, STEPS - 1)] * g
        return w - LR * g
    return step


def reference(spec, model, batch, params, adapted, weights=None, first_order=False):
    """The meta-gradient summed over tasks, one task at a time: the query loss after STEPS
    steps (or the ``weights``-weighted query losses after every step). With BatchNorm copies
    in ``params`` the adapted BatchNorm parameters after step k are ``rule.bnwb.<k+1>``."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    step, kind = step_of(spec, leaves), batch.loss
    bn = {k.split(".", 3)[3] for k in params if k.startswith("rule.bnwb.")}
    weights = weights or [0.0] * (STEPS - 1) + [1.0]
    total = {k: torch.zeros_like(v) for k, v in params.items()}

    def accumulate(output, wrt):
        for n, g in zip(wrt, torch.autograd.grad(output, list(wrt.values()), allow_unused=True), strict=True):
            total[n] = total[n] + (0 if g is None else g)

    for t in range(batch.n_tasks):
        fast, objective = {n: leaves[n] for n in adapted}, 0.0
        for k in range(STEPS):
            support = loss_of(model, kind, {**leaves, **fast}, batch.support_x[t], batch.support_y[t])
            grads = torch.autograd.grad(support, [fast[n] for n in adapted], create_graph=not first_order)
            fast = {n: leaves[f"rule.bnwb.{k + 1}.{n}"] if n in bn else step(n, fast[n], g, k)
                    for n, g in zip(adapted, grads, strict=True)}
            if first_order:
                fast = {n: v.detach().requires_grad_(True) for n, v in fast.items()}
            if weights[k]:
                query = weights[k] * loss_of(model, kind, {**leaves, **fast}, batch.query_x[t], batch.query_y[t])
                if first_order:
                    accumulate(query, {**{n: v for n, v in leaves.items() if n not in fast}, **fast})
                else:
                    objective = objective + query
        if not first_order:
            accumulate(objective, leaves)
    return total


def relative_errors(got, want):
    """Per tensor: ||got - want|| / ||want||; for a tensor whose gradient is zero but for
    rounding (a convolution's bias ahead of BatchNorm: ||want|| <= 1e-12 of the whole
    gradient's), relative to the whole gradient's norm."""
    whole = float(torch.cat([w.flatten() for w in want.values()]).norm())
    scale = {k: float(w.norm()) if float(w.norm()) > 1e-12 * whole else whole for k, w in want.items()}
    return {k: float((got[k] - w).norm()) / scale[k] for k, w in want.items()}


# -- against the explicit loops --------------------------------------------------------------
PHASES = {  # (rule options, outer step): what the schedule makes of it
    "msl, second order": ({"msl_steps": 10, "first_order_steps": 2}, 4),
    "msl, first order": ({"msl_steps": 10, "first_order_steps": 2}, 1),
    "msl, checkpointed": ({"msl_steps": 10, "first_order_steps": 2, "checkpoint_inner": True}, 4),
    "first order before the switch": ({"first_order_steps": 2}, 1),
    "second order after the switch": ({"first_order_steps": 2}, 2),
}


@pytest.mark.parametrize("adapt", ["all", "head"])
@pytest.mark.parametrize("phase", sorted(PHASES))
@pytest.mark.parametrize("spec", ["metasgd", "kfo", "maml++"])
def test_msl_and_annealing_match_an_explicit_loop(spec, phase, adapt):
    options, step = PHASES[phase]
    model, batch = family("sine")
    rule = rule_of(spec, adapt=adapt, **options)
    params = moved(rule.init_params(model))
    weights = msl_weights(STEPS, step, options["msl_steps"]) if step < options.get("msl_steps", 0) else None
    first_order = step < options["first_order_steps"]
    want = reference(spec, model, batch, params, list(rule.adapted(params)), weights, first_order)
    got = rule.meta_gradient(model, params, batch, step=step).grads
    errors = relative_errors(got, want)
    assert max(errors.values()) <= 1e-12, errors
    learned = [k for k in params if k.startswith("rule.")]
    if first_order:  # the inner update's meta-parameters are learned only through the loop
        assert all(float(got[k].abs().max()) == 0.0 for k in learned)
    else:
        assert all(float(got[k].abs().max()) > 0.0 for k in learned)


def test_first_order_maml_takes_the_multi_step_loss_at_each_steps_end():
    model, batch = family("sine")
    rule = FOMAML(inner_lr=LR, inner_steps=STEPS, msl_steps=10)
    params = rule.init_params(model)
    want = reference("maml", model, batch, params, list(params), msl_weights(STEPS, 4, 10), first_order=True)
    errors = relative_errors(rule.meta_gradient(model, params, batch, step=4).grads, want)
    assert max(errors.values()) <= 1e-12, errors
    late = rule.meta_gradient(model, params, batch, step=10).grads  # MSL over: the last step's loss alone
    plain = FOMAML(inner_lr=LR, inner_steps=STEPS).meta_gradient(model, params, batch).grads
    assert all(torch.equal(late[k], plain[k]) for k in params)


@pytest.mark.parametrize("spec", ["metasgd", "kfo"])
def test_annealing_is_the_first_order_rule_before_its_switch_and_second_order_after(spec):
    """Before the switch: first-order MAML's gradient on the model's parameters, bit for bit
    (the learned rates start at inner_lr, the factors at the identity: the same inner loop),
    and none on the rule's own; from the switch on: the second-order rule, bit for bit."""
    model, batch = family("sine")
    da = rule_of(spec, first_order_steps=3)
    params = da.init_params(model)
    fomaml = FOMAML(inner_lr=LR, inner_steps=STEPS).meta_gradient(model, params, batch).grads
    before = da.meta_gradient(model, params, batch, step=2).grads
    assert all(torch.equal(before[k], fomaml[k]) for k in fomaml)
    assert all(float(before[k].abs().max()) == 0.0 for k in params if k not in fomaml)
    params = moved(params)
    second = rule_of(spec).meta_gradient(model, params, batch)
    after = da.meta_gradient(model, params, batch, step=3)
    assert all(torch.equal(after.grads[k], second.grads[k]) for k in params) and after.metrics == second.metrics


# -- checkpointed == plain, bit for bit ------------------------------------------------------
def assert_identical(a, b, keys):
    assert a.grads.keys() == b.grads.keys() == set(keys)
    unequal = [k for k in keys if not torch.equal(a.grads[k], b.grads[k])]
    assert not unequal, unequal
    assert a.metrics == b.metrics


@pytest.mark.parametrize("msl", [False, True])
@pytest.mark.parametrize("adapt,vectorize", [("all", True), ("all", False), ("head", True), ("head", False)])
@pytest.mark.parametrize("name", ["sine", "conv4"])
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_checkpointed_gradient_is_the_plain_one_bit_for_bit(spec, name, adapt, vectorize, msl):
    model, batch = family(name)
    options = {"adapt": adapt, "vectorize": vectorize, "msl_steps": 10 if msl else 0, "first_order_steps": 2}
    params = moved(rule_of(spec, **options).init_params(model))
    plain = rule_of(spec, **options).meta_gradient(model, params, batch, step=4)
    ckpt = rule_of(spec, checkpoint_inner=True, **options).meta_gradient(model, params, batch, step=4)
    assert_identical(plain, ckpt, params)


@pytest.mark.parametrize("msl", [False, True])
@pytest.mark.parametrize("spec", ["maml++", "metasgd", "kfo"])
def test_checkpointed_per_step_batchnorm_is_the_plain_one_bit_for_bit(spec, msl):
    """MAML++ in full on Conv4 (LSLR, BNWB, MSL), and BNWB around Meta-SGD and Meta-KFO."""
    model, batch = family("conv4")
    options = {"bn_per_step": True, "msl_steps": 10 if msl else 0}
    params = moved(rule_of(spec, **options).init_params(model))
    assert "rule.bnwb.3.body.0.1.weight" in params
    plain = rule_of(spec, **options).meta_gradient(model, params, batch, step=4)
    ckpt = rule_of(spec, checkpoint_inner=True, **options).meta_gradient(model, params, batch, step=4)
    assert_identical(plain, ckpt, params)
    want = reference(spec, model, batch, params, list(rule_of(spec, **options).adapted(params)),
                     msl_weights(STEPS, 4, 10) if msl else None)
    errors = relative_errors(ckpt.grads, want)
    assert max(errors.values()) <= 1e-12, errors


def test_checkpointed_multi_step_loss_draws_what_the_plain_loop_draws():
    """DropBlock draws at every query of the multi-step loss: the rebuilt queries replay them."""
    torch.manual_seed(0)
    model = resnet12(3, image_size=16, channels=[2, 3, 4, 5], drop_rate=0.3, block_size=2).double()
    images = torch.rand(6, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    batch = ImageClasses(images, 3, 1, 1).sample(2, 0, 0, 0).to(dtype=torch.float64)
    rule = MetaSGD(inner_lr=0.3, inner_steps=2, msl_steps=10)
    params = moved(rule.init_params(model))
    torch.manual_seed(1)
    plain = rule.meta_gradient(model, params, batch, step=3)
    torch.manual_seed(1)
    ckpt = MetaSGD(inner_lr=0.3, inner_steps=2, msl_steps=10, checkpoint_inner=True).meta_gradient(
        model, params, batch, step=3)
    assert_identical(plain, ckpt, params)
    torch.manual_seed(2)
    other = rule.meta_gradient(model, params, batch, step=3)
    assert not torch.equal(other.grads["body.0.conv1.weight"], plain.grads["body.0.conv1.weight"])


# -- the engine ------------------------------------------------------------------------------
COMBINATIONS = [("sine", "metasgd", {"msl_steps": 10, "first_order_steps": 2}, 1),
                ("sine", "kfo", {"msl_steps": 10, "checkpoint_inner": True, "adapt": "head"}, 4),
                ("conv4", "metasgd", {"bn_per_step": True, "checkpoint_inner": True, "msl_steps": 10}, 4),
                ("conv4", "kfo", {"bn_per_step": True, "first_order_steps": 2, "msl_steps": 10}, 1),
                ("conv4", "maml++", {"bn_per_step": True, "checkpoint_inner": True, "msl_steps": 10}, 4)]


@pytest.mark.parametrize("name,spec,options,step", COMBINATIONS)
def test_vectorised_equals_per_task_loop_for_the_options(name, spec, options, step):
    model, batch = family(name)
    vec, loop = rule_of(spec, vectorize=True, **options), rule_of(spec, vectorize=False, **options)
    params = moved(vec.init_params(model))
    a, b = vec.meta_gradient(model, params, batch, step=step), loop.meta_gradient(model, params, batch, step=step)
    for k in params:
        torch.testing.assert_close(a.grads[k], b.grads[k], rtol=1e-9, atol=1e-12)
    assert a.metrics == pytest.approx(b.metrics, rel=1e-9)
    ea, eb = vec.evaluate(model, params, batch, steps=STEPS + 1), loop.evaluate(model, params, batch, steps=STEPS + 1)
    np.testing.assert_allclose(ea.query_loss, eb.query_loss, rtol=1e-9)
    torch.testing.assert_close(vec.predict(model, params, batch), loop.predict(model, params, batch))


# -- what is refused -------------------------------------------------------------------------
INVALID = [("fomaml", {"checkpoint_inner": True}), ("fomaml", {"first_order_steps": 5}),
           ("fomaml", {"lslr": True}), ("fomaml", {"bn_per_step": True}),
           ("metasgd", {"lslr": True}), ("kfo", {"lslr": True})]


@pytest.mark.parametrize("name,options", INVALID)
def test_an_invalid_combination_names_both_keys(name, options):
    key, value = next(iter(options.items()))
    with pytest.raises(ValueError) as info:
        ALGORITHMS[name](**options)
    message = str(info.value)
    assert f"algorithm.{key}={value!r}" in message and f"algorithm.name={name}" in message, message
    assert "\n" not in message


def test_every_rule_knows_its_config_name():
    assert {name: cls.config_name for name, cls in ALGORITHMS.items()} == {name: name for name in ALGORITHMS}


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "kfo"])
@pytest.mark.parametrize("key", ["msl_steps", "first_order_steps"])
def test_a_negative_schedule_is_named(name, key):
    with pytest.raises(ValueError, match=rf"\.{key}=-1: must be an integer >= 0"):
        ALGORITHMS[name](**{key: -1})


def test_the_config_takes_the_options_for_every_rule_through_the_loop_and_refuses_the_rest():
    from distmeta.config import ConfigError, load_config

    for name in ("maml", "metasgd", "kfo"):
        cfg = load_config(None, [f"algorithm.name={name}", "algorithm.checkpoint_inner=true", "algorithm.msl_steps=5",
                                 "algorithm.first_order_steps=2", "algorithm.bn_per_step=true"])
        rule = cfg.algorithm.build()
        assert (rule.checkpoint_inner, rule.msl_steps, rule.first_order_steps, rule.bn_per_step) == (True, 5, 2, True)
    with pytest.raises(ConfigError, match=r"algorithm\.checkpoint_inner=True needs a second-order gradient, "
                                          r"but algorithm\.name=fomaml is first order"):
        load_config(None, ["algorithm.name=fomaml", "algorithm.checkpoint_inner=true"])
    with pytest.raises(ConfigError, match=r"algorithm\.lslr=True: Meta-SGD \(algorithm\.name=metasgd\) learns its own rates"):
        load_config(None, ["algorithm.name=metasgd", "algorithm.lslr=true"])


def test_checkpointing_refuses_an_update_whose_state_depends_on_the_path():
    """A momentum carries the previous steps' gradients: replaying a step from its iterate
    alone would give a wrong gradient, so checkpointing says so instead."""
    from dataclasses import dataclass as frozen_dataclass

    from distmeta.algorithms.inner import InnerState
    from distmeta.algorithms.unrolled import UnrolledRule

    @frozen_dataclass(frozen=True)
    class MomentumState(InnerState):
        velocity: dict | None = None

    @frozen_dataclass(frozen=True)
    class Momentum:
        lr: float

        def init_params(self, model, params, adapted):
            return {}

        def init(self, c):
            return MomentumState(velocity={n: torch.zeros_like(v) for n, v in c.start.items()})

        def update(self, c, fast, grads, state):
            velocity = {n: 0.9 * state.velocity[n] + grads[n] for n in fast}
            return {n: fast[n] - self.lr * velocity[n] for n in fast}, MomentumState(state.k + 1, velocity)

    @frozen_dataclass(frozen=True)
    class MomentumMAML(UnrolledRule):
        def base_update(self):
            return Momentum(self.inner_lr)

    torch.manual_seed(0)
    model = mlp(hidden=(4,)).double()
    batch = Sinusoid(shots=3, query=3).sample(2, 0, 0, 0).to(dtype=torch.float64)
    plain = MomentumMAML(inner_lr=0.05, inner_steps=2)
    assert plain.meta_gradient(model, plain.init_params(model), batch).n_tasks == 2
    with pytest.raises(ValueError, match="checkpoint_inner.*state carries \\['velocity'\\]"):
        MomentumMAML(inner_lr=0.05, inner_steps=2, checkpoint_inner=True).meta_gradient(
            model, plain.init_params(model), batch)
