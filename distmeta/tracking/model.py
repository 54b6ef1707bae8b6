"""The meta-learned parameters as an MLflow model: a pyfunc that adapts to each task's
support set and predicts its query set.

Input (a dict of arrays, as the signature says): ``support_x [T, S, ...]``, ``support_y
[T, S]`` (class labels) or ``[T, S, out]`` (regression targets), ``query_x [T, Q, ...]``.
Output: ``[T, Q]`` predicted labels for classification, ``[T, Q, out]`` values for
regression, after the run's evaluation number of inner steps (the ``inner_steps`` param of
``predict`` overrides it). The model holds the run's resolved config and its final
parameters, distmeta's code and the user's (``code_paths``), and requirements that name what
that code imports at the versions the run used, so it loads in an environment made from them
alone. On the same episodes its predictions score what ``distmeta eval`` reports at that
inner step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)
ARTIFACT_PATH = "model"
CODE = str(Path(__file__).with_name("pyfunc.py"))
"""The model is logged from code (MLflow's models-from-code), not pickled."""
PACKAGE = str(Path(__file__).resolve().parents[1])
"""distmeta's own code, shipped with every model."""
REQUIRES = ("torch", "numpy", "PyYAML", "pydantic", "pyarrow", "webdataset", "pillow", "mlflow")
"""The distributions the model's code imports (distmeta's config, rules, tasks and data rooms)."""


def requirements() -> list[str]:
    """``name==version`` of each distribution in :data:`REQUIRES`, as installed here."""
    import importlib.metadata

    out = []
    for name in REQUIRES:
        try:
            version = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
        out.append(f"{name}=={version}")
    return out


def signature(example: dict[str, np.ndarray], output: np.ndarray):
    """Tensor specs with free task and example dimensions; ``inner_steps`` as a param."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    def spec(name: str | None, a: np.ndarray) -> TensorSpec:
        return TensorSpec(a.dtype, (-1, -1, *a.shape[2:]), name)

    inputs = Schema([spec(k, v) for k, v in example.items()])
    return ModelSignature(inputs=inputs, outputs=Schema([spec(None, output)]),
                          params=ParamSchema([ParamSpec("inner_steps", "long", -1)]))


def log_model(tracking_uri: str, run_id: str, artifacts: dict[str, str], example: dict[str, np.ndarray],
              register: str | None = None, code: tuple[str, ...] = ()) -> str | None:
    """Log the pyfunc under the run, with its ``artifacts`` (``config``, ``params``), a signature
    from ``example``, distmeta's code and the user's (``code``), and register it as
    ``register``; its model URI, or ``None`` when MLflow refused (a warning: the run itself is
    never lost for it)."""
    from types import SimpleNamespace

    import mlflow

    from distmeta.tracking.pyfunc import MetaLearner

    try:
        probe = MetaLearner()
        probe.load_context(SimpleNamespace(artifacts=artifacts))
        sig = signature(example, probe.predict(None, example))
        # MLflow's fluent API, for this call only: the process's tracking URI is left as it was
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        with _use_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name=ARTIFACT_PATH, python_model=CODE, artifacts=artifacts,
                                           signature=sig, input_example=example, registered_model_name=register,
                                           code_paths=[PACKAGE, *code], pip_requirements=requirements())
        logger.info("logged the model %s%s", info.model_uri, f", registered as {register}" if register else "")
        return info.model_uri
    except Exception as exc:
        logger.warning("the model was not logged to MLflow run %s: %s", run_id, exc)
        return None
