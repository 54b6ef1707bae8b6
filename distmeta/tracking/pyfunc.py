"""The pyfunc of :mod:`distmeta.tracking.model`, logged as code (MLflow's models-from-code):
MLflow runs this file to build the model, so loading needs distmeta installed, and nothing
is unpickled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from distmeta.config import parse_yaml, validate
from distmeta.evaluation import Learner
from distmeta.types import EpisodeBatch


class MetaLearner(mlflow.pyfunc.PythonModel):
    """Adapts to each task's support set and predicts its query set (:class:`Learner`)."""

    def load_context(self, context: Any) -> None:
        cfg = validate(parse_yaml(Path(context.artifacts["config"]).read_text()))
        state = torch.load(context.artifacts["params"], weights_only=True, map_location="cpu")
        self.learner = Learner.of(cfg, state["params"])

    def predict(self, context, model_input, params=None):  # no hints: MLflow would read them as a schema
        sx, sy, qx = (np.asarray(model_input[k]) for k in ("support_x", "support_y", "query_x"))
        classification = np.issubdtype(sy.dtype, np.integer)
        dtype = self.learner.dtype
        x = lambda a: torch.as_tensor(a).to(dtype)  # noqa: E731
        y = torch.as_tensor(sy).long() if classification else x(sy)
        qy = torch.zeros(qx.shape[:2], dtype=torch.long) if classification else \
            torch.zeros((*qx.shape[:2], *sy.shape[2:]), dtype=dtype)
        batch = EpisodeBatch(x(sx), y, x(qx), qy, "cross_entropy" if classification else "mse")
        steps = int((params or {}).get("inner_steps", self.learner.steps))
        out = self.learner.predict(batch, steps)
        return (out.argmax(-1) if classification else out).numpy()


mlflow.models.set_model(MetaLearner())
