"""Meta-gradient rules behind one interface: ``meta_gradient(model, params, batch)``.

Each rule is a frozen dataclass of its hyper-parameters, and a rule with an inner loop is
two parts: an inner update (:class:`InnerUpdate`: SGD, Meta-SGD's rates, MAML++'s LSLR and
per-step BatchNorm weights, Meta-KFO's factors) and a way to take the outer gradient
(:class:`OuterGradient`: through the loop, checkpointed, first order, implicit, path length,
theta - phi_K, none). ``MetaGradient.grads`` and ``.metrics`` are sums over the batch's tasks.
"""

from distmeta.algorithms.base import AdaptingRule, Evaluation, Rule
from distmeta.algorithms.erm import ERM
from distmeta.algorithms.fomaml import FOMAML
from distmeta.algorithms.imaml import IMAML
from distmeta.algorithms.inner import InnerState, InnerUpdate
from distmeta.algorithms.kfo import KFO
from distmeta.algorithms.leap import Leap
from distmeta.algorithms.maml import MAML
from distmeta.algorithms.metasgd import MetaSGD
from distmeta.algorithms.outer import OuterGradient
from distmeta.algorithms.proto_maml import FOProtoMAML, ProtoMAML
from distmeta.algorithms.protonet import ProtoNet
from distmeta.algorithms.r2d2 import R2D2, ridge_head
from distmeta.algorithms.registry import ALGORITHMS
from distmeta.algorithms.reptile import Reptile
from distmeta.types import EpisodeBatch, MetaAlgorithm, MetaGradient, Params

__all__ = ["ALGORITHMS", "ERM", "FOMAML", "IMAML", "KFO", "MAML", "R2D2", "AdaptingRule", "EpisodeBatch",
           "Evaluation", "InnerState", "InnerUpdate", "Leap", "MetaAlgorithm", "MetaGradient", "MetaSGD",
           "OuterGradient", "Params", "ProtoNet", "ProtoMAML", "FOProtoMAML", "Reptile", "Rule", "ridge_head"]
