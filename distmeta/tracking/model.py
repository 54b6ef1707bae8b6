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

import numpy as np

logger = logging.getLogger(__name__)
ARTIFACT_PATH = "model"
CODE = str(Path(__file__).with_name("pyfunc.py"))
"""The model is logged from code (MLflow's models-from-code), not pickled."""


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

    from distmeta.tracking.pyfunc import MetaLearner

    artifacts = {"config": config_path, "params": params_path}
    try:
        probe = MetaLearner()
        probe.load_context(SimpleNamespace(artifacts=artifacts))
        sig = signature(example, probe.predict(None, example))
        # MLflow's fluent API, for this call only: the process's tracking URI is left as it was
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        with _use_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name=ARTIFACT_PATH, python_model=CODE, artifacts=artifacts,
                                           signature=sig, input_example=example, registered_model_name=register)
        logger.info("logged the model %s%s", info.model_uri, f", registered as {register}" if register else "")
        return info.model_uri
    except Exception as exc:
        logger.warning("the model was not logged to MLflow run %s: %s", run_id, exc)
        return None
