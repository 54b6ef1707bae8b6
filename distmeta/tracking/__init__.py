"""Experiment tracking: an MLflow tracker, a no-op tracker, and their helpers.

This package is the only place in distmeta that imports MLflow (lazily, on first use by
:class:`MlflowTracker`). The training driver holds one :class:`Tracker`::

    tracker = MlflowTracker(uri=None, experiment="sinusoid", spill_dir=run_dir / "tracking")
    tracker.start("maml-seed0", params=config_dict, tags=run_tags(nodes=1, workers=4))
    tracker.log_metrics(step, {"train/query_loss": 0.31})
    tracker.end("FINISHED")
"""

from distmeta.tracking.base import RUN_STATUSES, NullTracker, Tracker, check_status
from distmeta.tracking.mlflow_tracker import (
    MlflowTracker,
    TrackerOptions,
    resolve_tracking_uri,
    tracker_options,
)
from distmeta.tracking.params import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
    batches,
    flatten_params,
    validate_key,
)
from distmeta.tracking.plots import adaptation_curve, training_curves
from distmeta.tracking.retry import RetryPolicy, TrackingError
from distmeta.tracking.spill import METRICS_FILE, PARAMS_FILE, MetricRecord, Spill
from distmeta.tracking.system import system_metrics_available
from distmeta.tracking.tags import git_commit, git_dirty, run_tags

__all__ = [
    "MAX_ENTITIES_PER_BATCH",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_TAGS_PER_BATCH",
    "MAX_PARAM_VAL_LENGTH",
    "MAX_TAG_VAL_LENGTH",
    "METRICS_FILE",
    "PARAMS_FILE",
    "RUN_STATUSES",
    "MetricRecord",
    "MlflowTracker",
    "NullTracker",
    "RetryPolicy",
    "Spill",
    "Tracker",
    "TrackerOptions",
    "TrackingError",
    "adaptation_curve",
    "batches",
    "check_status",
    "flatten_params",
    "git_commit",
    "git_dirty",
    "resolve_tracking_uri",
    "run_tags",
    "system_metrics_available",
    "tracker_options",
    "training_curves",
    "validate_key",
]
