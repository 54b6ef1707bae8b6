"""Opening MLflow runs: find or create the experiment, create a run, or reopen one to resume."""

from __future__ import annotations

import logging
from typing import Any

from distmeta.tracking.retry import Retrier, TrackingError

logger = logging.getLogger(__name__)


class RunOpener:
    """Creates and reopens runs of one experiment through ``client``, retried by ``retrier``.

    Raises :class:`~distmeta.tracking.retry.TrackingError` when the backend fails for good.
    """

    def __init__(self, client: Any, retrier: Retrier, experiment: str,
                 artifact_location: str | None = None) -> None:
        self.client = client
        self.retrier = retrier
        self.experiment = experiment
        self.artifact_location = artifact_location

    def experiment_id(self) -> str:
        """Id of ``self.experiment``, created (or restored from deleted) when needed."""
        exp = self._find_experiment()
        if exp is None:
            try:
                return self.retrier.call("create experiment", self._create_experiment)
            except TrackingError as exc:
                exp = self._find_experiment()  # maybe created meanwhile by another driver
                if exc.error_code != "RESOURCE_ALREADY_EXISTS" or exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            logger.warning("MLflow experiment %r was deleted; restoring it", self.experiment)
            self.retrier.call("restore experiment",
                              lambda: self.client.restore_experiment(exp.experiment_id))
        return exp.experiment_id

    def _find_experiment(self) -> Any | None:
        """The experiment named ``self.experiment``, or ``None``."""
        return self.retrier.call(
            "get experiment", lambda: self.client.get_experiment_by_name(self.experiment))

    def _create_experiment(self) -> str:
        """Create the experiment (with ``artifact_location`` if given); return its id."""
        return self.client.create_experiment(
            self.experiment, artifact_location=self.artifact_location)

    def create(self, run_name: str, tags: dict[str, str]) -> str:
        """Create a new run in the experiment; return its id."""
        exp_id = self.experiment_id()
        run = self.retrier.call("create run", lambda: self.client.create_run(
            exp_id, run_name=run_name, tags=tags))
        return run.info.run_id

    def reopen(self, run_id: str, run_name: str, flat: dict[str, str]) -> tuple[str, dict]:
        """Set run ``run_id`` RUNNING again; return it and the params it does not have yet.

        A param whose value changed since the run began cannot be overwritten in MLflow: it is
        skipped with a warning naming it. A run that no longer exists starts a new one.
        """
        try:
            run = self.retrier.call("get run", lambda: self.client.get_run(run_id))
        except TrackingError as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            logger.warning("MLflow run %s to resume does not exist; starting a new run", run_id)
            return self.create(run_name, {"distmeta.resumed_from": run_id}), flat
        if run.info.lifecycle_stage == "deleted":
            logger.warning("MLflow run %s was deleted; restoring it to resume", run_id)
            self.retrier.call("restore run", lambda: self.client.restore_run(run_id))
        self.retrier.call("reopen run", lambda: self.client.update_run(run_id, "RUNNING"))
        old = run.data.params
        changed = sorted(k for k in flat if k in old and old[k] != flat[k])
        if changed:
            logger.warning("resumed run %s: params %s changed since the run began; MLflow keeps "
                           "the first values", run_id, ", ".join(changed))
        return run_id, {k: v for k, v in flat.items() if k not in old}
