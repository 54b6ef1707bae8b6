"""The same MAML meta-gradient through the anchor libraries: higher, learn2learn, TorchOpt.

None of them is a dependency of distmeta. The bench looks for them in a separate directory
(``$DISTMETA_BENCH_ANCHORS``, default ``/tmp/anchors``, filled with e.g.
``pip install --target /tmp/anchors --no-deps higher torchopt optree``) that is put on
``sys.path`` only while an anchor is imported, and records why when one cannot be used.

How they were made to import next to torch 2.14 on Python 3.11 (recorded in the JSON too):
:data:`INSTALL_NOTE`.

Each implementation is the library's documented MAML recipe: a Python loop over tasks,
``inner_steps`` of differentiable SGD on the support loss (second order), the query loss
back-propagated into the model's parameters, gradients summed over tasks, which is what
``distmeta.algorithms.MAML.meta_gradient`` returns in ``MetaGradient.grads``.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

import torch
from torch import Tensor, nn

from distmeta.losses import task_loss
from distmeta.types import EpisodeBatch, Params

log = logging.getLogger(__name__)
ANCHORS_ENV = "DISTMETA_BENCH_ANCHORS"
DEFAULT_ANCHORS = "/tmp/anchors"
ANCHOR_MODULES = {"higher": "higher", "learn2learn": "learn2learn", "torchopt": "torchopt"}

INSTALL_NOTE = (
    "pip install --target DIR --no-deps higher torchopt optree graphviz gym gym_notices tqdm; "
    "torchopt's C++ extension does not load on torch 2.14 (undefined symbol), its Python path is used; "
    "learn2learn 0.2.0's sdist fails to build on Python 3.11 (its pre-generated Cython C includes "
    "longintrepr.h): rebuild it with a current Cython (python setup.py build_ext --inplace) and copy "
    "the learn2learn package into DIR")

AnchorFn = Callable[[ModuleType, nn.Module, EpisodeBatch, float, int], None]


def anchors_dir() -> str:
    return os.environ.get(ANCHORS_ENV, DEFAULT_ANCHORS)


@contextmanager
def on_path(path: str) -> Iterator[None]:
    """``path`` first on ``sys.path`` inside the block only."""
    sys.path.insert(0, path)
    try:
        yield
    finally:
        if path in sys.path:
            sys.path.remove(path)


def load(name: str) -> tuple[ModuleType | None, str | None]:
    """(module, None), or (None, why not): the import error as ``Type: message``."""
    path = anchors_dir()
    with on_path(path), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(ANCHOR_MODULES[name])
        except Exception as exc:  # any import failure is a finding, not a crash
            return None, f"{type(exc).__name__}: {exc} (looked in {path} and the environment)"
    return module, None


def version(module: ModuleType) -> str:
    """The installed version of an anchor module ("unknown" without metadata)."""
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        from importlib.metadata import version as dist_version

        with on_path(anchors_dir()):
            return dist_version(module.__name__)
    except Exception:  # no metadata: say so rather than guess
        return "unknown"


def _loss(batch: EpisodeBatch, out: Tensor, y: Tensor) -> Tensor:
    return task_loss(batch.loss, out, y)[0]  # type: ignore[arg-type]


def maml_higher(higher: ModuleType, model: nn.Module, batch: EpisodeBatch, lr: float, steps: int) -> None:
    """higher's ``innerloop_ctx`` with a differentiable SGD inner optimiser."""
    inner = torch.optim.SGD(model.parameters(), lr=lr)
    for t in range(batch.n_tasks):
        with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(_loss(batch, fmodel(batch.support_x[t]), batch.support_y[t]))
            _loss(batch, fmodel(batch.query_x[t]), batch.query_y[t]).backward()


def maml_learn2learn(l2l: ModuleType, model: nn.Module, batch: EpisodeBatch, lr: float, steps: int) -> None:
    """learn2learn's ``algorithms.MAML``: ``clone()`` then ``adapt()`` per task."""
    maml = l2l.algorithms.MAML(model, lr=lr, first_order=False)
    for t in range(batch.n_tasks):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(_loss(batch, learner(batch.support_x[t]), batch.support_y[t]))
        _loss(batch, learner(batch.query_x[t]), batch.query_y[t]).backward()


def maml_torchopt(torchopt: ModuleType, model: nn.Module, batch: EpisodeBatch, lr: float, steps: int) -> None:
    """TorchOpt's ``MetaSGD`` with ``extract_state_dict`` / ``recover_state_dict`` per task."""
    inner = torchopt.MetaSGD(model, lr=lr)
    net_state = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
    opt_state = torchopt.extract_state_dict(inner, by="reference")
    for t in range(batch.n_tasks):
        for _ in range(steps):
            inner.step(_loss(batch, model(batch.support_x[t]), batch.support_y[t]))
        _loss(batch, model(batch.query_x[t]), batch.query_y[t]).backward()
        torchopt.recover_state_dict(model, net_state)
        torchopt.recover_state_dict(inner, opt_state)


IMPLEMENTATIONS: dict[str, AnchorFn] = {
    "higher": maml_higher, "learn2learn": maml_learn2learn, "torchopt": maml_torchopt}


def with_params(model: nn.Module, params: Params) -> nn.Module:
    """A copy of ``model`` whose parameters hold ``params`` (the shared model is not touched)."""
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in clone.named_parameters():
            p.copy_(params[name])
    return clone


def anchor_step(name: str, module: ModuleType, model: nn.Module, params: Params, batch: EpisodeBatch,
                lr: float, steps: int) -> Callable[[], Params]:
    """A zero-argument call computing the summed MAML gradient with anchor ``name``."""
    fn = IMPLEMENTATIONS[name]
    net = with_params(model, params)

    def step() -> Params:
        net.zero_grad(set_to_none=True)
        fn(module, net, batch, lr, steps)
        return {k: p.grad.detach().clone() for k, p in net.named_parameters()}  # type: ignore[union-attr]

    return step


def relative_error(got: Params, want: Params) -> float:
    """``||got - want|| / ||want||`` over all parameters flattened together."""
    a = torch.cat([got[k].reshape(-1).double() for k in want])
    b = torch.cat([want[k].reshape(-1).double() for k in want])
    return float((a - b).norm() / b.norm())
