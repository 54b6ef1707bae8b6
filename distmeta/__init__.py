"""distmeta: distributed, exact meta-training on Ray, tracked in MLflow.

The Python API:

- :func:`fit`: meta-train a config, with the user's own model, task family or rule as
  objects or factories (:mod:`distmeta.runtime.api`);
- :func:`load_model`: a trained run's model as a plain ``torch.nn.Module``, with its rule and
  meta-parameters (:mod:`distmeta.tracking.trained`);
- ``__version__``.

The names are imported on first use, so ``import distmeta`` costs nothing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

try:
    __version__ = importlib.metadata.version("distmeta")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_HOMES = {"fit": "distmeta.runtime.api", "load_model": "distmeta.tracking.trained", "Callbacks": "distmeta.runtime.run",
          "RunConfig": "distmeta.config", "load_config": "distmeta.config"}
__all__ = ["Callbacks", "RunConfig", "__version__", "fit", "load_config", "load_model"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'distmeta' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
