"""The MLflow tracker: one run per training job, written through ``MlflowClient`` by run id.

No fluent (``mlflow.start_run``) global state is used, so a long-lived driver can hold it
safely. Every backend call is retried within a :class:`RetryPolicy`; what cannot be sent goes
to the spill files (see :mod:`distmeta.tracking.spill`) and is re-sent by a later successful
flush. MLflow is imported on first use, so ``import distmeta.tracking`` stays cheap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from distmeta.tracking.base import check_status
from distmeta.tracking.params import (
    MAX_TAG_VAL_LENGTH,
    batches,
    flatten_params,
    to_float,
    truncate,
    validate_key,
)
from distmeta.tracking.retry import Retrier, RetryPolicy, TrackingError, configure_http
from distmeta.tracking.runs import RunOpener
from distmeta.tracking.spill import NO_RUN, MetricRecord, Spill, write_json
from distmeta.tracking.system import start_system_metrics, stop_system_metrics
from distmeta.uri import split_credentials

logger = logging.getLogger(__name__)


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's local default (an SQLite file
    ``mlflow.db`` in the current directory), made absolute so a later ``chdir`` is harmless.
    A web URI's ``user:password@`` moves to ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (where
    they are not set), so no credential is written with the URI anywhere."""
    import mlflow

    stripped, user, password = split_credentials(uri or mlflow.get_tracking_uri())
    if user:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
    if password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
    return stripped


@dataclass(frozen=True)
class TrackerOptions:
    """How an :class:`MlflowTracker` records and sends.

    Attributes:
        system_metrics: record MLflow's ``system/*`` metrics (needs psutil).
        system_metrics_interval_s: sampling interval of the system metrics.
        max_buffer: buffered metric values that trigger a send from ``log_metrics``.
        flush_interval_s: ``log_metrics`` also sends when the last send is this old.
        retry: how hard each backend call tries (:class:`RetryPolicy`). A dead server costs
            ``flush``/``end`` at most about ``max_wait_s + timeout_s`` each; ``log_metrics``
            then skips it for ``cooldown_s`` and afterwards probes it with single attempts
            until it answers.
    """

    system_metrics: bool = True
    system_metrics_interval_s: float = 10.0
    max_buffer: int = 1000
    flush_interval_s: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {self.max_buffer}")


def tracker_options(**flat: Any) -> TrackerOptions:
    """:class:`TrackerOptions` from flat keywords: its own fields and :class:`RetryPolicy`'s
    (``tracker_options(system_metrics=False, max_retries=2, timeout_s=1.0)``)."""
    retry_keys = {f.name for f in fields(RetryPolicy)}
    retry = RetryPolicy(**{k: v for k, v in flat.items() if k in retry_keys})
    return TrackerOptions(retry=retry, **{k: v for k, v in flat.items() if k not in retry_keys})


class MlflowTracker:
    """A :class:`~distmeta.tracking.base.Tracker` writing one MLflow run.

    Args:
        uri: tracking URI (``http://host:port``, ``sqlite:///path``); ``None`` for
            ``MLFLOW_TRACKING_URI`` or MLflow's embedded local default.
        experiment: experiment name, created when missing.
        spill_dir: where unsent metrics/params go (``unsent_metrics.jsonl``,
            ``unsent_params.json``) and where ``log_dict`` writes its files.
        artifact_location: artifact root for a newly created experiment (``None``: server's).
        options: buffering, system metrics and retries (:class:`TrackerOptions`).
    """

    def __init__(self, uri: str | None = None, experiment: str = "distmeta",
                 spill_dir: str | os.PathLike[str] = "mlflow_spill", *,
                 artifact_location: str | None = None, options: TrackerOptions | None = None) -> None:
        from mlflow import MlflowClient

        options = options or TrackerOptions()
        self.policy = options.retry
        configure_http(self.policy)
        self.tracking_uri = resolve_tracking_uri(uri)
        self.spill = Spill(spill_dir)
        self.run_id: str | None = None
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self._retrier = Retrier(self.policy)
        self._runs = RunOpener(self._client, self._retrier, experiment, artifact_location)
        self._system = (options.system_metrics, options.system_metrics_interval_s)
        self._monitor: Any | None = None
        self._max_buffer = options.max_buffer
        self._flush_interval_s = options.flush_interval_s
        self._buffer: list[MetricRecord] = []
        self._last_send = time.monotonic()
        self._lock = threading.RLock()
        self._spill_pending = False
        self._ended = False
        self.rejected = 0
        """Metric values the server refused for good (dropped, with a warning)."""

    # ----------------------------------------------------------------- run lifecycle
    def start(
        self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
        resume_run_id: str | None = None,
    ) -> str | None:
        """Create a run (or reopen ``resume_run_id``: same run, set RUNNING again), log the
        flattened ``params`` and ``tags``, start system metrics; return the run id.

        Returns ``None`` when no run could be created (the server is down): params and tags
        then go to ``unsent_params.json`` and later metrics to the spill file.

        Raises:
            RuntimeError: this tracker's previous run has not been ended.
        """
        if self.run_id is not None and not self._ended:
            raise RuntimeError(f"tracker already holds run {self.run_id}; end() it first")
        flat = flatten_params(params)
        tag_map = {validate_key(k, "tag"): truncate(k, str(v), MAX_TAG_VAL_LENGTH, "tag")
                   for k, v in tags.items()}
        self._ended, self._spill_pending = False, True
        try:
            if resume_run_id is not None:
                self.run_id, flat = self._runs.reopen(resume_run_id, run_name, flat)
            else:
                self.run_id = self._runs.create(run_name, tag_map)
        except TrackingError as exc:
            self.run_id = None if exc.permanent else resume_run_id
            logger.warning("MLflow run %r not started (%s); params and tags spilled to %s",
                           run_name, exc, self.spill.params_path)
            self.spill.write_run_info(self.run_id, run_name=run_name, params=flat, tags=tag_map)
            return self.run_id
        self._log_params(flat, tag_map)
        self._resend_run_info()
        if self._system[0]:
            self._monitor = start_system_metrics(
                self.run_id, self.tracking_uri, resume=resume_run_id is not None,
                sampling_interval_s=self._system[1])
        logger.info("MLflow run %s (%s) at %s", self.run_id, run_name, self.tracking_uri)
        return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        """Stop system metrics, flush, and mark the run ``status``; a second call does nothing."""
        check_status(status)
        if self._ended:
            return
        self._ended = True
        stop_system_metrics(self._monitor)
        self._monitor = None
        self.flush()
        if self.run_id is None:
            return
        run_id = self.run_id
        try:
            self._retrier.call("end run", lambda: self._client.set_terminated(run_id, status))
        except TrackingError:
            self.spill.write_run_info(run_id, status=status)
            return
        self._resend_statuses()

    def _resend_run_info(self) -> None:
        """What earlier attempts spilled: this run's params, tags and artifacts, and what was
        spilled before any run existed (metrics too), now that the server answers; then the
        final statuses that other runs of this folder could not send."""
        info = self.spill.read_run_info()
        mine = {k: info.pop(k) for k in (self.run_id, NO_RUN) if k in info}
        if not mine:
            self._resend_statuses()
            return
        self.spill.replace_run_info(info)
        for entry in mine.values():
            self._log_params(dict(entry.get("params") or {}), dict(entry.get("tags") or {}))
            for artifact in entry.get("artifacts") or []:
                if Path(artifact["local_path"]).exists():
                    self.log_artifact(artifact["local_path"], artifact.get("artifact_path"))
        early = self.spill.read_metrics(None)
        if early:
            self.spill.drop_metrics(None)
            self.spill.write_metrics(self.run_id, early)
            self._spill_pending = True
        logger.info("re-sent what earlier attempts spilled for run %s", self.run_id)
        self._resend_statuses()

    def _resend_statuses(self) -> None:
        """End the runs whose final status was spilled (their run stayed RUNNING)."""
        info = self.spill.read_run_info()
        for run_id, entry in list(info.items()):
            status = entry.get("status")
            if run_id in (NO_RUN, self.run_id) or not status:
                continue
            try:
                self._retrier.call("end spilled run", lambda r=run_id, st=status: self._client.set_terminated(r, st))
            except TrackingError as exc:
                if not exc.permanent:
                    return
            entry.pop("status")
            if not entry:
                info.pop(run_id)
            self.spill.replace_run_info(info)
            logger.info("ended MLflow run %s as %s (its status was spilled)", run_id, status)

    def _log_params(self, params: dict[str, str], tags: dict[str, str]) -> None:
        """Send params and tags in ``log_batch`` chunks; spill whatever was not sent."""
        from mlflow.entities import Param, RunTag

        run_id = self.run_id
        chunks = list(batches(params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()]))
        for i, (_, p, t) in enumerate(chunks):
            try:
                self._retrier.call("log params", lambda p=p, t=t: self._client.log_batch(
                    run_id, params=p, tags=t, synchronous=True))
            except TrackingError:
                rest = chunks[i:]
                self.spill.write_run_info(
                    run_id, params={x.key: x.value for _, ps, _ in rest for x in ps},
                    tags={x.key: x.value for _, _, ts in rest for x in ts})
                return

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set ``tags`` on the run (sent with ``log_batch``; spilled when the server is down)."""
        if self.run_id is None:
            return
        tag_map = {validate_key(k, "tag"): truncate(k, str(v), MAX_TAG_VAL_LENGTH, "tag") for k, v in tags.items()}
        self._log_params({}, tag_map)

    # ----------------------------------------------------------------- metrics
    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer ``metrics`` at ``step``; send when ``max_buffer`` values are waiting or the
        last send is ``flush_interval_s`` old (skipped while a dead server cools down).

        Raises:
            ValueError, TypeError: a key MLflow rejects or a value that is not one number.
        """
        stamp = int(time.time() * 1000)
        records = [MetricRecord(validate_key(k, "metric"), to_float(k, v, step), int(step), stamp)
                   for k, v in metrics.items()]
        with self._lock:
            self._buffer.extend(records)
            due = (len(self._buffer) >= self._max_buffer
                   or time.monotonic() - self._last_send >= self._flush_interval_s)
        if due:
            self._send(background=True)

    def flush(self) -> None:
        """Send every buffered metric now (then any spilled ones, if the server answers)."""
        self._send(background=False)

    def _send(self, background: bool) -> None:
        """Send the buffer; spill what fails; re-send spilled metrics after a success."""
        with self._lock:
            records, self._buffer = self._buffer, []
            self._last_send = time.monotonic()
            if self.run_id is None:
                self.spill.write_metrics(None, records)
                return
            unsent = self._send_records(records, background)
            if unsent:
                self.spill.write_metrics(self.run_id, unsent)
                self._spill_pending = True
            elif self._spill_pending:
                self._resend_spilled(background)

    def _send_records(self, records: Sequence[MetricRecord], background: bool) -> list:
        """``log_batch`` ``records`` in chunks; return those not sent."""
        from mlflow.entities import Metric

        run_id = self.run_id
        chunks = [chunk for chunk, _, _ in batches(metrics=list(records))]
        for i, chunk in enumerate(chunks):
            metrics = [Metric(r.key, r.value, r.timestamp, r.step) for r in chunk]
            try:
                self._retrier.call("log metrics", lambda m=metrics: self._client.log_batch(
                    run_id, metrics=m, synchronous=True), background=background)
            except TrackingError as exc:
                if not exc.permanent:
                    return [r for c in chunks[i:] for r in c]
                self.rejected += len(chunk)  # the server refuses it for good: resending cannot help
                logger.warning("MLflow refused %d metric values for good (%s); dropped (%d so far)", len(chunk),
                               exc, self.rejected)
        return []

    def _resend_spilled(self, background: bool) -> None:
        """Send this run's metrics from the spill file; keep only those still unsent."""
        spilled = self.spill.read_metrics(self.run_id)
        if spilled:
            unsent = self._send_records(spilled, background)
            self.spill.drop_metrics(self.run_id)
            self.spill.write_metrics(self.run_id, unsent)
            logger.info("re-sent %d spilled metric values to run %s",
                        len(spilled) - len(unsent), self.run_id)
            self._spill_pending = bool(unsent)
        else:
            self._spill_pending = False

    def end_children(self, status_by_run_dir: Mapping[str, str]) -> int:
        """End the runs nested under this one that are still RUNNING (a sweep's trials that
        were stopped or failed), with the status given for their run dir (else KILLED)."""
        if self.run_id is None:
            return 0
        run_id = self.run_id
        try:
            experiment = self._client.get_run(run_id).info.experiment_id
            children = self._client.search_runs(
                [experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'")
            for child in children:
                status = status_by_run_dir.get(child.data.tags.get("distmeta.run_dir", ""), "KILLED")
                self._client.set_terminated(child.info.run_id, check_status(status))
            return len(children)
        except Exception as exc:  # the server is down: the runs stay RUNNING, the sweep goes on
            logger.warning("could not end the nested runs of %s: %s", run_id, exc)
            return 0

    # ----------------------------------------------------------------- models
    def log_model(self, config_path: str, params_path: str, example: Mapping[str, Any],
                  register: str | None = None, code: Sequence[str] = ()) -> str | None:
        """The run's final parameters as a pyfunc model (:mod:`distmeta.tracking.model`), with
        the user's ``code`` beside distmeta's; its model URI, or ``None`` when MLflow refused (a
        warning, never a lost run)."""
        if self.run_id is None:
            return None
        from distmeta.tracking.model import log_model

        return log_model(self.tracking_uri, self.run_id, {"config": config_path, "params": params_path},
                         dict(example), register, tuple(code))

    # ----------------------------------------------------------------- inputs
    def log_dataset(self, name: str, digest: str, source_type: str, source: str,
                    profile: Mapping[str, Any], context: str = "training") -> None:
        """Record the run's dataset as an MLflow input (the UI's Datasets column); a failure
        to send it is a warning, never a lost run."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        run_id = self.run_id
        if run_id is None:
            return
        entity = DatasetInput(Dataset(name=name, digest=digest[:36], source_type=source_type, source=source,
                                      profile=json.dumps(dict(profile), sort_keys=True)),
                              tags=[InputTag("mlflow.data.context", context)])
        try:
            self._retrier.call("log dataset", lambda: self._client.log_inputs(run_id, datasets=[entity]))
        except TrackingError as exc:
            logger.warning("dataset input %s not recorded in MLflow: %s", name, exc)

    # ----------------------------------------------------------------- artifacts
    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Upload file or directory ``local_path`` under ``artifact_path``; on failure its path
        is recorded under ``artifacts`` in ``unsent_params.json``.

        Raises:
            FileNotFoundError: ``local_path`` does not exist.
        """
        path = Path(local_path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {str(local_path)!r} does not exist")
        run_id = self.run_id
        if run_id is not None:
            upload = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
            try:
                self._retrier.call(f"log artifact {path.name}",
                                   lambda: upload(run_id, str(path), artifact_path))
                return
            except TrackingError:
                pass
        self.spill.write_run_info(run_id, artifacts=[
            {"local_path": str(path.resolve()), "artifact_path": artifact_path}])

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """Write ``data`` as JSON to ``<spill_dir>/artifacts/<artifact_file>`` and upload it
        as ``artifact_file`` (e.g. ``eval/table.json``; numpy/torch numbers become floats)."""
        local = write_json(data, self.spill.dir / "artifacts", artifact_file)
        parent = str(Path(artifact_file).parent)
        self.log_artifact(str(local), None if parent == "." else parent)
