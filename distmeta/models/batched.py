"""The task-batched forward: the forwards of T tasks, each with its own parameters, as one
call per layer, for models built from standard layers.

``torch.func.vmap`` of ``functional_call`` gives the same numbers for any module, but pays
a fixed cost on every call (the module's parameters swapped in, the inputs and outputs
flattened and unflattened as pytrees, a batching rule looked up per operation): on the
MAML sinusoid MLP that is about a third of a 6-task meta-gradient. Here each layer is one
batched kernel instead:

* ``nn.Linear``: a batched matrix product (``baddbmm``) with per-task weights, a plain
  ``linear`` over all T x N rows with shared ones;
* ``nn.Conv2d``: a grouped convolution (``groups = T``, the tasks side by side as channel
  groups: the model's FLOPs, no more) with per-task weights, one convolution over all
  T x N images with shared ones;
* ``nn.BatchNorm2d`` without running statistics (transductive, Finn et al. 2017): batch
  statistics per task and channel, the tasks as channel groups;
* ``nn.ReLU``, ``nn.MaxPool2d``, ``nn.Flatten``, ``nn.Identity``, the spatial mean of
  Conv4, and :class:`~distmeta.models.base.MetaModel` (``head(body(x))``) as they are.

A parameter is per task when it has one more (leading) dimension than the module's own;
otherwise it is shared by the tasks. Any other module (DropBlock, ResNet-12's blocks, a
user's own) makes :func:`supports` false, and the caller uses ``vmap``.

Under autocast the caller uses ``vmap`` too: ``vmap``'s convolution does not go through
autocast, so with ``runtime.precision: bf16`` Conv4's convolutions have run in float32 under
``vmap``; here they would run in bf16, a different (and, measured on Conv4 MAML at K = 1,
ten times less accurate: relative gradient error 0.34 against 0.03) computation.
"""

from __future__ import annotations

from collections.abc import Mapping
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distmeta.models.base import MetaModel
from distmeta.models.conv4 import SpatialMean

ENABLED = True
"""Off: every model runs under ``vmap`` (the benchmarks compare the two paths with it)."""
_SUPPORTED: WeakKeyDictionary[nn.Module, bool] = WeakKeyDictionary()


def _leaf_ok(m: nn.Module) -> bool:
    if type(m) in (nn.Sequential, MetaModel, nn.ReLU, nn.Identity, SpatialMean, nn.Linear):
        return True
    if type(m) is nn.Conv2d:
        return m.padding_mode == "zeros"
    if type(m) is nn.BatchNorm2d:
        return m.running_mean is None and m.running_var is None
    if type(m) is nn.MaxPool2d:
        return not m.return_indices
    if type(m) is nn.Flatten:
        return m.start_dim == 1 and m.end_dim == -1
    return False


def fuses(model: nn.Module, device_type: str = "cpu") -> bool:
    """Whether every task's numbers are the same in a batch of any size (>= 2 tasks) on
    ``device_type``: what running several logical shards in one call needs. Measured on the
    CPU: batched matrix products (``bmm``, ``baddbmm``) give each task the same bits in any
    batch of 2 or more (one task is a plain matrix product, another kernel); oneDNN's grouped
    convolutions pick their kernels by the number of groups (Conv4 with 8 channels on 16 x 16
    inputs: other weight gradients with 6 tasks than with 2), and are slower with more
    groups anyway (Conv4 MAML, 16 tasks: 181 ms against 4 x 4 tasks: 161 ms). Not measured on
    GPUs: there, one call per shard."""
    return device_type == "cpu" and supports(model, device_type) and all(
        type(m) in (nn.Sequential, MetaModel, nn.ReLU, nn.Identity, nn.Linear, nn.Flatten) for m in model.modules())


def supports(model: nn.Module, device_type: str = "cpu") -> bool:
    """Whether :func:`forward_tasks` can run ``model``: every module one it knows, no buffers,
    no autocast on ``device_type``."""
    if not ENABLED or (device_type != "meta" and torch.is_autocast_enabled(device_type)):
        return False
    known = _SUPPORTED.get(model)
    if known is None:
        known = all(_leaf_ok(m) for m in model.modules()) and not any(True for _ in model.buffers())
        _SUPPORTED[model] = known
    return known


class _X:
    """Activations of T tasks: ``[T, N, ...]`` (``grouped`` false) or, between convolution
    layers with per-task weights, ``[N, T*C, H, W]`` (the tasks as channel groups)."""

    def __init__(self, value: Tensor, tasks: int, grouped: bool = False) -> None:
        self.value, self.tasks, self.grouped = value, tasks, grouped

    def by_task(self) -> Tensor:
        if not self.grouped:
            return self.value
        v = self.value
        return v.reshape(v.shape[0], self.tasks, -1, *v.shape[2:]).transpose(0, 1)

    def by_group(self) -> Tensor:
        if self.grouped:
            return self.value
        v = self.value
        return v.transpose(0, 1).reshape(v.shape[1], self.tasks * v.shape[2], *v.shape[3:])

    def folded(self) -> Tensor:
        """``[T*N, ...]``: every task's inputs as one batch (for shared weights)."""
        v = self.by_task()
        return v.reshape(-1, *v.shape[2:])

    def unfold(self, value: Tensor) -> _X:
        return _X(value.reshape(self.tasks, -1, *value.shape[1:]), self.tasks)


def _params(params: Mapping[str, Tensor], prefix: str, m: nn.Module) -> tuple[Tensor | None, Tensor | None, bool]:
    """The module's weight and bias, and whether they are per task."""
    w, b = params.get(prefix + "weight"), params.get(prefix + "bias")
    own = getattr(m, "weight", None)
    per_task = w is not None and own is not None and w.dim() == own.dim() + 1
    return w, b, per_task


def _run(m: nn.Module, prefix: str, params: Mapping[str, Tensor], x: _X) -> _X:
    kind = type(m)
    if kind is nn.Sequential:
        for name, child in m.named_children():
            x = _run(child, f"{prefix}{name}.", params, x)
        return x
    if kind is MetaModel:
        return _run(m.head, prefix + "head.", params, _run(m.body, prefix + "body.", params, x))
    if kind in (nn.ReLU, nn.Identity):
        return _X(torch.relu(x.value), x.tasks, x.grouped) if kind is nn.ReLU else x
    if kind is nn.Linear:
        w, b, per_task = _params(params, prefix, m)
        v = x.by_task()
        if not per_task:
            return _X(F.linear(v, w, b), x.tasks)
        wt = w.transpose(1, 2)  # type: ignore[union-attr]
        return _X(torch.bmm(v, wt) if b is None else torch.baddbmm(b.unsqueeze(1), v, wt), x.tasks)
    if kind is nn.Conv2d:
        w, b, per_task = _params(params, prefix, m)
        args = (m.stride, m.padding, m.dilation)
        if not per_task:
            return x.unfold(F.conv2d(x.folded(), w, b, *args, m.groups))
        out = F.conv2d(x.by_group(), w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),  # type: ignore[union-attr]
                       *args, m.groups * x.tasks)
        return _X(out, x.tasks, grouped=True)
    if kind is nn.BatchNorm2d:
        w, b, per_task = _params(params, prefix, m)
        if not per_task:  # shared weights, statistics still per task: one copy per group
            w = None if w is None else w.repeat(x.tasks)
            b = None if b is None else b.repeat(x.tasks)
        else:
            w = None if w is None else w.reshape(-1)
            b = None if b is None else b.reshape(-1)
        return _X(F.batch_norm(x.by_group(), None, None, w, b, True, 0.0, m.eps), x.tasks, grouped=True)
    if kind is nn.MaxPool2d:
        pool = (m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if x.grouped:
            return _X(F.max_pool2d(x.value, *pool), x.tasks, grouped=True)
        return x.unfold(F.max_pool2d(x.folded(), *pool))
    if kind is SpatialMean:
        return _X(x.by_task().mean(dim=(-2, -1)), x.tasks)
    if kind is nn.Flatten:
        return _X(x.by_task().flatten(2), x.tasks)
    raise TypeError(f"forward_tasks: {kind.__name__} is not a layer it knows; check supports(model) first")


def forward_tasks(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Outputs ``[T, N, ...]`` of ``model`` on inputs ``x`` ``[T, N, ...]``, task t with its
    parameters: ``params[name][t]`` where a parameter is per task, ``params[name]`` where it
    is shared. Needs :func:`supports`; gives what ``vmap`` of ``functional_call`` gives."""
    return _run(model, "", params, _X(x, x.shape[0])).by_task()
