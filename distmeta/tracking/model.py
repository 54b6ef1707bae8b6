"""The meta-learned parameters as an MLflow model: a pyfunc that adapts to each task's
support set and predicts its query set.

Input (a dict of arrays, as the signature says): ``support_x [T, S, ...]``, ``support_y
[T, S]`` (class labels) or ``[T, S, out]`` (regression targets), ``query_x [T, Q, ...]``.
Output: ``[T, Q]`` predicted labels for classification, ``[T, Q, out]`` values for
regression, after the run's evaluation number of inner steps (the ``inner_steps`` param of
``predict`` overrides it). The model holds the run's resolved config and its final
parameters; loading it needs distmeta installed. On the same episodes its predictions score
what ``distmeta eval`` reports at that inner step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
ARTIFACT_PATH = "model"


def _python_model():
    import mlflow

    class MetaLearner(mlflow.pyfunc.PythonModel):
        def load_context(self, context: Any) -> None:
            import torch

            from distmeta.config import parse_yaml, validate

            self.cfg = validate(parse_yaml(Path(context.artifacts["config"]).read_text()))
            state = torch.load(context.artifacts["params"], weights_only=True, map_location="cpu")
            self.dtype = getattr(torch, self.cfg.runtime.dtype)
            self.model = self.cfg.model.build().to(self.dtype)
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

    return MetaLearner()


def signature(example: dict[str, np.ndarray], output: np.ndarray):
    """Tensor specs with free task and example dimensions; ``inner_steps`` as a param."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    def spec(name: str | None, a: np.ndarray) -> TensorSpec:
        return TensorSpec(a.dtype, (-1, -1, *a.shape[2:]), name)

    inputs = Schema([spec(k, v) for k, v in example.items()])
    return ModelSignature(inputs=inputs, outputs=Schema([spec(None, output)]),
                          params=ParamSchema([ParamSpec("inner_steps", "long", -1)]))


def log_model(tracking_uri: str, run_id: str, config_path: str, params_path: str,
              example: dict[str, np.ndarray], register: str | None = None) -> str | None:
    """Log the pyfunc under the run, with a signature from ``example`` (and register it as
    ``register``); its model URI, or ``None`` when MLflow refused (a warning: the run itself
    is never lost for it)."""
    from types import SimpleNamespace

    import mlflow

    artifacts = {"config": config_path, "params": params_path}
    try:
        probe = _python_model()
        probe.load_context(SimpleNamespace(artifacts=artifacts))
        sig = signature(example, probe.predict(None, example))
        # MLflow's fluent API, for this call only: the process's tracking URI is left as it was
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        with _use_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name=ARTIFACT_PATH, python_model=_python_model(), artifacts=artifacts,
                                           signature=sig, input_example=example, registered_model_name=register)
        logger.info("logged the model %s%s", info.model_uri, f", registered as {register}" if register else "")
        return info.model_uri
    except Exception as exc:
        logger.warning("the model was not logged to MLflow run %s: %s", run_id, exc)
        return None
