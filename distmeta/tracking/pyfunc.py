"""The pyfunc of :mod:`distmeta.tracking.model`, logged as code (MLflow's models-from-code):
MLflow runs this file to build the model, so loading needs distmeta installed, and nothing
is unpickled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np


class MetaLearner(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        import torch

        from distmeta.config import parse_yaml, validate

        self.cfg = validate(parse_yaml(Path(context.artifacts["config"]).read_text()))
        state = torch.load(context.artifacts["params"], weights_only=True, map_location="cpu")
        self.dtype = getattr(torch, self.cfg.runtime.dtype)
        self.model = self.cfg.model.build().to(self.dtype).eval()
        self.rule = self.cfg.algorithm.build()
        self.params = {k: v.to(self.dtype) for k, v in state["params"].items()}
        rule_steps = getattr(self.rule, "inner_steps", 0)
        self.steps = self.cfg.eval.steps if self.cfg.eval.steps is not None else max(rule_steps, 1)

    def predict(self, context, model_input, params=None):  # no hints: MLflow would read them as a schema
        import torch

        from distmeta.types import EpisodeBatch

        sx, sy, qx = (np.asarray(model_input[k]) for k in ("support_x", "support_y", "query_x"))
        classification = np.issubdtype(sy.dtype, np.integer)
        x = lambda a: torch.as_tensor(a).to(self.dtype)  # noqa: E731
        y = torch.as_tensor(sy).long() if classification else x(sy)
        qy = torch.zeros(qx.shape[:2], dtype=torch.long) if classification else \
            torch.zeros((*qx.shape[:2], *sy.shape[2:]), dtype=self.dtype)
        batch = EpisodeBatch(x(sx), y, x(qx), qy, "cross_entropy" if classification else "mse")
        steps = int((params or {}).get("inner_steps", self.steps))
        out = self.rule.predict(self.model, self.params, batch, steps=steps)
        return (out.argmax(-1) if classification else out).numpy()


mlflow.models.set_model(MetaLearner())
