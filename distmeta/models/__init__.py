"""Models: every one a ``body`` and a linear ``head`` (see :mod:`distmeta.models.base`)."""

from distmeta.models.base import HEAD_PREFIX, MetaModel, head_prefix, zero_head
from distmeta.models.conv4 import conv4
from distmeta.models.linear import linear, linear_rep, representation
from distmeta.models.mlp import mlp
from distmeta.models.resnet12 import resnet12
from distmeta.models.resnet18 import resnet18

MODELS = {"mlp": mlp, "conv4": conv4, "resnet12": resnet12, "resnet18": resnet18, "linear_rep": linear_rep, "linear": linear}


__all__ = ["HEAD_PREFIX", "MODELS", "MetaModel", "conv4", "linear", "linear_rep", "mlp", "representation",
           "resnet12", "resnet18", "head_prefix", "zero_head"]
