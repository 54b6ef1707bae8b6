"""A trained run's model out of distmeta: a plain ``torch.nn.Module`` with its weights, the
rule, and every meta-parameter, from a run directory, a checkpoint file or an MLflow model;
and the weights exported beside the config.

``load_model(RUN_DIR)`` builds the run's model from its ``config.yaml`` and loads the newest
checkpoint (``step=`` another); ``load_model("models:/NAME/VERSION")`` or
``load_model("runs:/RUN_ID/model")`` downloads the logged MLflow model (the same config and
final parameters). The module fine-tunes with ordinary PyTorch; ``rule.predict(model,
params, batch)`` adapts it as training did (``params`` also holds the rule's own
meta-parameters, ``rule.*``, such as learned inner rates).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from distmeta import plugins
from distmeta.config import RunConfig, parse_yaml, validate
from distmeta.errors import ConfigError, NotFound
from distmeta.rundir import layout
from distmeta.rundir.checkpoint import load_checkpoint
from distmeta.rundir.resume import read_run_config
from distmeta.rundir.storage import RunDir
from distmeta.types import Params

log = logging.getLogger(__name__)
RULE_PREFIX = "rule."
FORMATS = ("safetensors", "pt")


class Trained(NamedTuple):
    model: nn.Module
    rule: Any
    params: Params
    config: RunConfig


def _from_mlflow(uri: str) -> tuple[RunConfig, Params]:
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    plugins.search_paths(*[p for p in [local / "code"] if p.is_dir()])  # the user's code, shipped with the model
    files = {p.name: p for p in local.rglob("*") if p.is_file()}
    if layout.CONFIG not in files or layout.MODEL_PARAMS not in files:
        raise NotFound(f"{uri}: not a distmeta model (no {layout.CONFIG} and {layout.MODEL_PARAMS} among its artifacts)")
    cfg = validate(parse_yaml(files[layout.CONFIG].read_text()))
    state = torch.load(files[layout.MODEL_PARAMS], weights_only=True, map_location="cpu")
    return cfg, state["params"]


def _from_run(location: str, step: int | None) -> tuple[RunConfig, Params]:
    rd = RunDir(layout.checkpoint_run_dir(location))
    plugins.search_paths(*layout.read_code(rd))
    cfg = validate(read_run_config(rd))
    step = layout.checkpoint_step(location) if step is None else step
    state = load_checkpoint(rd, step)
    if state is None:
        raise NotFound(f"{rd.location}: no checkpoint yet")
    return cfg, state["params"]


def load_model(source: str, step: int | None = None) -> Trained:
    """``(model, rule, params, config)`` of a run directory, one of its checkpoints, or an MLflow
    model URI (``models:/...``, ``runs:/...``)."""
    cfg, params = _from_mlflow(source) if source.startswith(("models:/", "runs:/")) else _from_run(source, step)
    dtype = getattr(torch, cfg.runtime.dtype)
    model = cfg.model.build().to(dtype)
    weights = {k: v for k, v in params.items() if not k.startswith(RULE_PREFIX)}
    missing = sorted(set(dict(model.named_parameters())) - set(weights))
    if missing:
        raise NotFound(f"{source}: the checkpoint lacks the model's parameters {missing[:8]}")
    model.load_state_dict(weights, strict=False)
    return Trained(model, cfg.algorithm.build(), {k: v.to(dtype) for k, v in params.items()}, cfg)


def export(source: str, out: str, fmt: str = "safetensors", step: int | None = None) -> list[Path]:
    """Write the model's weights (``model.safetensors``: its ``state_dict``), the rule's own
    meta-parameters where it has any (``rule.safetensors``) and the resolved ``config.yaml``
    into the folder ``out``; the files written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {list(FORMATS)}")
    trained = load_model(source, step)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"model": {k: v.detach().contiguous() for k, v in trained.model.state_dict().items()},
             "rule": {k: v.detach().contiguous() for k, v in trained.params.items() if k.startswith(RULE_PREFIX)}}
    written = []
    for name, tensors in parts.items():
        if not tensors:
            continue
        path = folder / f"{name}.{fmt}"
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(path), metadata={"distmeta.config": layout.CONFIG})
        else:
            torch.save(tensors, path)
        written.append(path)
    config = folder / layout.CONFIG
    config.write_text(trained.config.to_yaml())
    log.info("exported %s to %s", source, folder)
    return [*written, config]
