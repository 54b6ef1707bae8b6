"""What must hold before any actor of a run starts, checked in the driver so that a mistake
is one line naming the key, not a dead actor on a remote node."""

from __future__ import annotations

import torch

from distmeta import plugins
from distmeta.config import IMAGE_FAMILIES, RunConfig
from distmeta.errors import ConfigError
from distmeta.rundir.checkpoint import newest_readable
from distmeta.rundir.model_init import initial_params
from distmeta.rundir.storage import RunDir
from distmeta.tasks.sources import check_data, task_source


def check(cfg: RunConfig) -> None:
    """A checkpoint to continue from that reads (when the run has any), the data,
    ``model.init`` fitting the model, and the user's own model, task family or rule running
    on the engine."""
    if cfg.run_dir:
        newest_readable(RunDir(cfg.run_dir))  # a run whose checkpoints all fail to read is refused here
    if cfg.model.init:
        initial_params(cfg)  # a checkpoint that does not fit is a ConfigError
    check_data(cfg)
    if not ships_with_distmeta(cfg):
        check_engine(cfg)


def ships_with_distmeta(cfg: RunConfig) -> bool:
    """Whether the model, the rule and the task family are all built-ins (known to run)."""
    family = cfg.task.family
    return (cfg.model.name in plugins.registry("model") and cfg.algorithm.name in plugins.registry("algorithm")
            and (family in IMAGE_FAMILIES or family in plugins.registry("task")))


def check_engine(cfg: RunConfig) -> None:
    """One meta-gradient of two of the run's own tasks, as a worker computes it: an error of
    the model (or the rule, or the family) is named with the key to change, and a module that
    changes a buffer in place (state the functional inner loop cannot carry) is named."""
    dtype = getattr(torch, cfg.runtime.dtype)
    model, rule = cfg.model.build().to(dtype), cfg.algorithm.build()
    torch.manual_seed(cfg.seed)
    params = {k: v.to(dtype) for k, v in rule.init_params(model).items()}
    batch = task_source(cfg).sample(2, cfg.seed, 0, 0).to(dtype=dtype)
    before = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        rule.meta_gradient(model, params, batch)
    except Exception as exc:
        hint = ("; its forward runs under torch.func.vmap with algorithm.vectorize=true: "
                "algorithm.vectorize=false runs one task at a time" if getattr(rule, "vectorize", False) else "")
        raise ConfigError(f"model.name={cfg.model.name} with algorithm.name={cfg.algorithm.name} does not run on "
                          f"distmeta's engine ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                          f"{hint}") from exc
    changed = [name for name, b in model.named_buffers() if name in before and not torch.equal(b, before[name])]
    if changed:
        raise ConfigError(f"model.name={cfg.model.name}: its forward changes the buffer(s) {changed} in place; the "
                          "inner loop is functional (torch.func) and cannot carry that state: hold it in a parameter, "
                          "or compute it from the inputs")
