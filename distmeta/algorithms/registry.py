"""Config names -> rules: a new rule is its file plus one line here. A rule is a frozen
dataclass whose fields are its ``algorithm.*`` keys. ANIL is not a rule of its own: it is
``maml`` with ``adapt: head`` (ANIL-KFO: ``kfo`` with ``adapt: head``); MAML++ is ``maml``
with its options (``lslr``, ``msl_steps``, ``first_order_steps``, ``bn_per_step``)."""

from __future__ import annotations

from distmeta.algorithms.erm import ERM
from distmeta.algorithms.fomaml import FOMAML
from distmeta.algorithms.imaml import IMAML
from distmeta.algorithms.kfo import KFO
from distmeta.algorithms.leap import Leap
from distmeta.algorithms.maml import MAML
from distmeta.algorithms.metasgd import MetaSGD
from distmeta.algorithms.proto_maml import FOProtoMAML, ProtoMAML
from distmeta.algorithms.protonet import ProtoNet
from distmeta.algorithms.r2d2 import R2D2
from distmeta.algorithms.reptile import Reptile

ALGORITHMS: dict[str, type] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "imaml": IMAML,
    "reptile": Reptile,
    "erm": ERM,
    "r2d2": R2D2,
    "protonet": ProtoNet,
    "metasgd": MetaSGD,
    "kfo": KFO,
    "leap": Leap,
    "proto_maml": ProtoMAML,
    "fo_proto_maml": FOProtoMAML,
}
