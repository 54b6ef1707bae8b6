"""The anchor libraries compute distmeta's MAML meta-gradient (benchmarks/anchors.py): the
comparison the benchmarks time is between equal gradients. distmeta's per-task loop gives the
anchors' gradient bit for bit (float32, the precision the benchmarks run in); the vectorised
engine sums the same terms in another order, equal to float64 rounding.

higher and TorchOpt are installed by ``make anchors`` into ``.anchors/``, a folder of their
own (``$DISTMETA_BENCH_ANCHORS``), never into the project's environment; this test fails when
they are missing, so the claim is checked on every run of the suite.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import anchors
from distmeta.algorithms import MAML
from distmeta.models import conv4, mlp
from distmeta.tasks import ImageClasses, Sinusoid
from distmeta.tasks.images import ArrayPool

INSTALLED = ("higher", "torchopt")


def sinusoid_case():
    torch.manual_seed(0)
    return mlp(hidden=(8, 8)).double(), Sinusoid(shots=5, query=5).sample(4, seed=3, step=0, shard=0).to(
        dtype=torch.float64)


def conv4_case():
    torch.manual_seed(0)
    images = torch.rand(12, 4, 1, 28, 28).numpy()
    pool = ArrayPool((images * 255).astype("uint8"))
    batch = ImageClasses(pool, way=3, shot=1, query=2, rotations=False).sample(2, 0, 0, 0)
    return conv4(3, hidden=4).double(), batch.to(dtype=torch.float64)


@pytest.mark.parametrize("name", INSTALLED)
@pytest.mark.parametrize("case", [sinusoid_case, conv4_case], ids=["sinusoid-mlp", "omniglot-conv4"])
@pytest.mark.parametrize("steps", [1, 3])
def test_anchor_gives_distmeta_s_maml_gradient(name, case, steps):
    module, error = anchors.load(name)
    assert module is not None, f"{name} is not installed where the benchmarks look ({anchors.anchors_dir()}): " \
                               f"run `make anchors` ({error})"
    model, batch = case()
    for dtype in (torch.float32, torch.float64):
        model, batch = model.to(dtype), batch.to(dtype=dtype)
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        theirs = anchors.anchor_step(name, module, model, params, batch, 0.1, steps)()
        loop = MAML(inner_lr=0.1, inner_steps=steps, vectorize=False).meta_gradient(model, params, batch).grads
        assert set(theirs) == set(loop)
        assert all(torch.equal(theirs[k], loop[k]) for k in loop), f"{name}, {dtype}: not bit-identical"
    vectorised = MAML(inner_lr=0.1, inner_steps=steps).meta_gradient(model, params, batch).grads
    assert anchors.relative_error(theirs, vectorised) < 1e-12
