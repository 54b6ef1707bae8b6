"""First-order MAML: Finn, Abbeel, Levine, ICML 2017, Section 5.2.

Treats d phi_K / d theta as the identity: the outer gradient is grad L_query evaluated at the
adapted parameters phi_K (Nichol et al. 2018, Eq. 5). No second-order terms, no graph through
the inner loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distmeta.algorithms.engine import UnrolledRule


@dataclass(frozen=True)
class FOMAML(UnrolledRule):
    """First-order MAML: ``FOMAML(inner_lr=0.4, inner_steps=1)``."""

    second_order: ClassVar[bool] = False
