"""Proto-MAML and fo-Proto-MAML (Triantafillou et al. 2020) against independent references:
the head initialisation against its closed form and against ProtoNets' distances, the
second-order meta-gradient against central finite differences (float64), and both against a
plain per-task autograd loop written here from the paper's definitions."""

import pytest
import torch
from torch import nn

from distmeta.algorithms import FOProtoMAML, ProtoMAML, ProtoNet
from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.proto_maml import prototype_head
from distmeta.models.base import MetaModel
from distmeta.types import EpisodeBatch

WAY, SHOT, QUERY, LR, STEPS = 3, 2, 2, 0.3, 2


def model() -> MetaModel:
    torch.manual_seed(0)
    return MetaModel(nn.Sequential(nn.Linear(4, 5), nn.Tanh()), 5, 7).double()  # a head of 7 > way outputs


def batch(tasks: int = 3) -> EpisodeBatch:
    g = torch.Generator().manual_seed(1)
    sx = torch.randn(tasks, WAY * SHOT, 4, generator=g, dtype=torch.float64)
    qx = torch.randn(tasks, WAY * QUERY, 4, generator=g, dtype=torch.float64)
    sy = torch.arange(WAY).repeat_interleave(SHOT).repeat(tasks, 1)
    qy = torch.arange(WAY).repeat_interleave(QUERY).repeat(tasks, 1)
    return EpisodeBatch(sx, sy, qx, qy, "cross_entropy", WAY)


def params(m: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def plain(m: MetaModel, theta: dict, b: EpisodeBatch, second_order: bool) -> dict:
    """The paper's definition, one task at a time with torch.autograd."""
    theta = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    body = {k[5:]: v for k, v in theta.items() if k.startswith("body.")}
    total = 0.0
    for t in range(b.n_tasks):
        feats = torch.func.functional_call(m.body, body, (b.support_x[t],))
        protos = torch.stack([feats[b.support_y[t] == k].mean(0) for k in range(WAY)])
        # the inner loop adapts the body and the head as separate parameters: the body it adapts is
        # a copy, so its inner gradient does not run through the prototypes as well
        fast = {**{f"body.{k}": v.clone() for k, v in body.items()}, "head.weight": 2 * protos,
                "head.bias": -(protos ** 2).sum(1)}
        for _ in range(STEPS):
            loss = nn.functional.cross_entropy(torch.func.functional_call(m, fast, (b.support_x[t],)), b.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=second_order, retain_graph=True)
            fast = {k: v - LR * (g if second_order else g.detach()) for (k, v), g in zip(fast.items(), grads, strict=True)}
        total = total + nn.functional.cross_entropy(torch.func.functional_call(m, fast, (b.query_x[t],)), b.query_y[t])
    out = torch.autograd.grad(total, list(theta.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(theta.items(), out, strict=True)}


def test_the_head_starts_as_the_prototypes_closed_form_and_predicts_as_protonets():
    m, b = model(), batch()
    theta = params(m)
    c = Chunk.make(m, theta, tuple(theta), b, batched=True)
    head = prototype_head(c, "head.")
    feats = torch.stack([m.body(b.support_x[t]) for t in range(b.n_tasks)]).detach()
    for t in range(b.n_tasks):
        protos = torch.stack([feats[t][b.support_y[t] == k].mean(0) for k in range(WAY)])
        torch.testing.assert_close(head["head.weight"][t], 2 * protos, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(head["head.bias"][t], -(protos ** 2).sum(1), rtol=1e-12, atol=1e-12)
    before = ProtoMAML(inner_lr=LR, inner_steps=STEPS).evaluate(m, theta, b, steps=0)
    protonet = ProtoNet().evaluate(m, theta, b)
    assert before.mean()[1][0] == pytest.approx(protonet.mean()[1][-1])  # the same classifier before adapting


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("rule, second_order", [(ProtoMAML, True), (FOProtoMAML, False)], ids=["proto_maml", "fo"])
def test_meta_gradient_equals_the_plain_loop(rule, second_order, vectorize):
    m, b = model(), batch()
    theta = params(m)
    got = rule(inner_lr=LR, inner_steps=STEPS, vectorize=vectorize).meta_gradient(m, theta, b)
    want = plain(m, theta, b, second_order)
    for k in theta:
        torch.testing.assert_close(got.grads[k], want[k], rtol=1e-9, atol=1e-12)
    assert torch.count_nonzero(got.grads["head.weight"]) == 0  # the model's head is never used
    assert torch.count_nonzero(got.grads["body.0.weight"]) > 0


def test_second_order_meta_gradient_matches_finite_differences():
    m, b = model(), batch(2)
    theta = params(m)
    rule = ProtoMAML(inner_lr=LR, inner_steps=STEPS)
    grads = rule.meta_gradient(m, theta, b).grads["body.0.weight"]

    def loss(w: torch.Tensor) -> float:
        return rule.meta_gradient(m, {**theta, "body.0.weight": w}, b).metrics["query_loss"]

    eps, w = 1e-6, theta["body.0.weight"]
    for i, j in [(0, 0), (2, 1), (4, 3)]:
        bump = torch.zeros_like(w)
        bump[i, j] = eps
        fd = (loss(w + bump) - loss(w - bump)) / (2 * eps)
        assert grads[i, j].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)
