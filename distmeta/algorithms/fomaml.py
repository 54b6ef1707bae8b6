"""First-order MAML: Finn, Abbeel, Levine, ICML 2017, Section 5.2.

Treats d phi_K / d theta as the identity: the outer gradient is grad L_query evaluated at the
adapted parameters phi_K (Nichol et al. 2018, Eq. 5). No second-order terms, no graph through
the inner loop. MAML++'s multi-step loss (``msl_steps``) applies, each step's query loss
differentiated at that step's end; the options that need the second order
(``checkpoint_inner``, ``first_order_steps``, ``lslr``, ``bn_per_step``: meta-parameters that
are learned only through the loop would get no gradient) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distmeta.algorithms.unrolled import UnrolledRule


@dataclass(frozen=True)
class FOMAML(UnrolledRule):
    """First-order MAML: ``FOMAML(inner_lr=0.4, inner_steps=1)``."""

    second_order: ClassVar[bool] = False
    config_name: ClassVar[str] = "fomaml"
