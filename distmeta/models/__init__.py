"""Models: every one a ``body`` and a linear ``head`` (see :mod:`distmeta.models.base`)."""

from distmeta.models.base import HEAD_PREFIX, MetaModel, head_names
from distmeta.models.conv4 import conv4
from distmeta.models.linear import linear, linear_rep, representation
from distmeta.models.mlp import mlp
from distmeta.models.resnet12 import resnet12

MODELS = {"mlp": mlp, "conv4": conv4, "resnet12": resnet12, "linear_rep": linear_rep, "linear": linear}


def build_model(name: str, **kwargs) -> MetaModel:
    """Build a model by its config name; a bad name lists the valid ones."""
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is not a model: expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["HEAD_PREFIX", "MODELS", "MetaModel", "build_model", "conv4", "head_names", "linear",
           "linear_rep", "mlp", "representation", "resnet12"]
