"""Rules whose outer gradient goes through the unrolled inner loop (MAML, first-order MAML,
Meta-SGD, Meta-KFO), and the options that belong to that outer gradient, for every inner
update alike (MAML++: Antoniou, Edwards, Storkey, "How to train your MAML", ICLR 2019,
Section 4):

* ``checkpoint_inner``: the second-order gradient by checkpointed reverse mode
  (:mod:`~distmeta.algorithms.checkpointed`), so memory stops growing with K;
* ``msl_steps`` (MSL): for the first ``msl_steps`` outer steps the outer loss is the weighted
  sum of the query losses after every inner step, the weights annealed from uniform toward
  the last step (:func:`~distmeta.algorithms.maml_plus_plus.msl_weights`); then the last
  step's loss alone;
* ``first_order_steps`` (DA): first order for the first ``first_order_steps`` outer steps,
  then second order;

and the options of the inner update: ``lslr`` (LSLR, learned rates per tensor and step; for
the rules whose update is SGD) and ``bn_per_step`` (BNWB, per-step BatchNorm weights, around
any inner update). See :mod:`~distmeta.algorithms.maml_plus_plus`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.checkpointed import Checkpointed
from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.inner import SGD, InnerUpdate
from distmeta.algorithms.maml_plus_plus import LSLR, PerStepBatchNorm, msl_weights
from distmeta.algorithms.outer import FirstOrder, OuterGradient, SecondOrder

SECOND_ORDER_ONLY = {
    "checkpoint_inner": "needs a second-order gradient",
    "first_order_steps": "anneals from first to second order",
    "lslr": "learns its rates through the loop, which needs a second-order gradient",
    "bn_per_step": "learns its BatchNorm weights through the loop, which needs a second-order gradient",
}
"""The options a first-order rule refuses, and why."""


@dataclass(frozen=True)
class UnrolledRule(AdaptingRule):
    """The query gradient after an unrolled inner loop: through it (``second_order``, MAML) or
    at its end (first-order MAML), with the outer gradient's and the inner update's options.
    A rule that learns its own inner update gives :meth:`base_update` and says so in
    ``learns_update`` (LSLR does not apply to it)."""

    checkpoint_inner: bool = False
    lslr: bool = False
    msl_steps: int = 0
    first_order_steps: int = 0
    bn_per_step: bool = False

    second_order: ClassVar[bool] = True
    fuses_shards: ClassVar[bool] = True
    learns_update: ClassVar[str] = ""
    """What the rule's own update learns, e.g. "Meta-SGD (algorithm.name=metasgd) learns its
    own rates": then ``lslr`` is refused with that reason."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("msl_steps", "first_order_steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"algorithm({type(self).__name__}).{key}={value!r}: must be an integer >= 0")
        if self.lslr and self.learns_update:
            raise ValueError(f"algorithm.lslr=True: {self.learns_update}")
        if not self.second_order:
            for key, why in SECOND_ORDER_ONLY.items():
                value = getattr(self, key)
                if value:
                    name = self.config_name or type(self).__name__
                    raise ValueError(f"algorithm.{key}={value!r} {why}, but algorithm.name={name} is first order")

    def base_update(self) -> InnerUpdate:
        """The update before BNWB: SGD, or LSLR's learned rates."""
        return LSLR(self.inner_lr, self.inner_steps) if self.lslr else SGD(self.inner_lr)

    def inner_update(self) -> InnerUpdate:
        update = self.base_update()
        return PerStepBatchNorm(update, self.inner_steps) if self.bn_per_step else update

    def is_second_order(self, c: Chunk) -> bool:
        """Whether chunk ``c`` differentiates through the loop (DA may say not yet)."""
        return self.second_order and c.step >= self.first_order_steps

    def outer_gradient(self, c: Chunk) -> OuterGradient:
        weights = tuple(msl_weights(self.inner_steps, c.step, self.msl_steps)) if c.step < self.msl_steps else None
        if not self.is_second_order(c):
            return FirstOrder(weights)
        return Checkpointed(weights) if self.checkpoint_inner else SecondOrder(weights)
