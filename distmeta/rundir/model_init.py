"""The meta-parameters at step 0, and ``model.init``: start from trained weights (pre-train,
then meta-train).

``model.init`` names a run directory (its newest checkpoint, e.g. a multi-task ERM
pre-training run: the "normal SGD" baseline the papers compare against, Collins et al. 2022;
Chen et al. 2019) or one checkpoint file, on a local disk or any ``pyarrow.fs`` URI.
``model.init_scope: body`` (default) takes the body's weights and keeps the config's fresh
head, so a 64-way pre-training head does not have to fit a 5-way task; ``all`` takes every
parameter. A checkpoint that does not fit the model is a :class:`ConfigError` naming the
parameters that are missing or whose shapes differ.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

from distmeta.config import RunConfig
from distmeta.errors import ConfigError
from distmeta.models import HEAD_PREFIX, head_prefix, zero_head
from distmeta.rundir.checkpoint import load_checkpoint, read_state
from distmeta.rundir.storage import RunDir
from distmeta.types import Params

log = logging.getLogger(__name__)
Scope = Literal["body", "all"]


def read_init(location: str) -> Params:
    """The parameters stored at ``location``: a run directory's newest checkpoint, or a file."""
    if location.endswith(".pt"):
        parent, _, name = location.rstrip("/").rpartition("/")
        try:
            state = read_state(RunDir(parent or "."), name)
        except FileNotFoundError:
            raise ConfigError(f"model.init={location!r}: no such checkpoint file") from None
    else:
        state = load_checkpoint(RunDir(location))
        if state is None:
            raise ConfigError(f"model.init={location!r}: no checkpoint there (a run directory with "
                              "checkpoints/, or a .pt file)")
    params = state.get("params") if isinstance(state, dict) else None
    if not isinstance(params, dict):
        raise ConfigError(f"model.init={location!r}: not a distmeta checkpoint (no params)")
    return params


def apply_init(params: Params, loaded: Params, scope: Scope, location: str, head: str = HEAD_PREFIX) -> Params:
    """``params`` with the ``scope`` entries replaced by ``loaded``'s, checked name by name
    (``head``: the head's name prefix, which ``body`` leaves out)."""
    wanted = [k for k in params if scope == "all" or not (k.startswith(head) or k.startswith("rule."))]
    missing = [k for k in wanted if k not in loaded]
    shapes = [f"{k} {list(loaded[k].shape)} (model {list(params[k].shape)})"
              for k in wanted if k in loaded and loaded[k].shape != params[k].shape]
    if missing or shapes:
        parts = ([f"missing {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"] if missing else []) + \
                ([f"shapes differ: {', '.join(shapes[:8])}"] if shapes else [])
        raise ConfigError(f"model.init={location!r} does not match model (model.init_scope={scope}): "
                          + "; ".join(parts))
    out = dict(params)
    with torch.no_grad():
        for k in wanted:
            out[k] = loaded[k].to(params[k].dtype).clone()
    log.info("model.init: %d parameters (%s) from %s", len(wanted), scope, location)
    return out


def initial_params(cfg: RunConfig) -> Params:
    """The meta-parameters at step 0: a pure function of the config (seeded model init, then
    ``model.init``, ``runtime.dtype`` and ``outer.zero_head``)."""
    torch.manual_seed(cfg.seed)
    model = cfg.model.build()
    params = cfg.algorithm.build().init_params(model)
    if cfg.model.init:
        params = apply_init(params, read_init(cfg.model.init), cfg.model.init_scope, cfg.model.init, head_prefix(model))
    dtype = getattr(torch, cfg.runtime.dtype)
    params = {k: v.to(dtype) for k, v in params.items()}
    if cfg.outer.zero_head:
        zero_head(params, head_prefix(model))
    return params
