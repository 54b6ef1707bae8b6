"""What a training run reports to its tracker (MLflow by default), written by the driver only.

Params: the resolved config, flattened. Tags: versions, git commit, nodes, workers, run dir.
Metrics (every ``tracking.log_every`` steps, batched): ``train/*`` (outer loss, pre/post
adaptation query loss and accuracy, gradient norm, skipped steps, retries, tasks/s, step
time split into compute and server time) and, for the linear-representation family,
``train/principal_angle_distance``. Artifacts: the resolved config, the final checkpoint,
PNG plots of the training curves and the adaptation curve, the evaluation table.
A resumed run continues the same MLflow run (its id is kept in ``tracking.json``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distmeta.config import RunConfig
from distmeta.runtime.storage import RunDir
from distmeta.tracking import (
    MlflowTracker,
    NullTracker,
    Tracker,
    adaptation_curve,
    run_tags,
    training_curves,
)
from distmeta.types import Params

log = logging.getLogger(__name__)
TRACKING_FILE = "tracking.json"


SPILLED = ("unsent_metrics.jsonl", "unsent_params.json")
"""The tracker's spill files (:mod:`distmeta.tracking.spill`), kept in ``RUN_DIR/tracking``."""


def _local_dir(rd: RunDir) -> Path:
    """Where spill files go: inside a local run dir, else a local staging folder that
    :class:`SpillMirror` keeps in step with ``RUN_DIR/tracking`` on the URI."""
    if rd.location.startswith("/"):
        return Path(rd.location) / "tracking"
    return Path(tempfile.mkdtemp(prefix="distmeta-tracking-"))


class SpillMirror:
    """For a run dir on a URI (s3://, gs://, file://): the spill files live in the run dir.
    They are fetched into the local staging folder at start (so a resumed run re-sends what
    an earlier attempt could not) and written back whenever they change."""

    def __init__(self, rd: RunDir, local: Path) -> None:
        self.rd, self.local = rd, local
        self.seen: dict[str, tuple[int, int] | None] = {}
        local.mkdir(parents=True, exist_ok=True)
        for name in SPILLED:
            if rd.exists(f"tracking/{name}"):
                (local / name).write_bytes(rd.read_bytes(f"tracking/{name}"))
                log.info("re-sending %s from %s", name, rd.uri("tracking"))
            self.seen[name] = self._stamp(name)

    def _stamp(self, name: str) -> tuple[int, int] | None:
        path = self.local / name
        if not path.exists():
            return None
        st = path.stat()
        return st.st_size, st.st_mtime_ns

    def sync(self) -> None:
        for name in SPILLED:
            stamp = self._stamp(name)
            if stamp == self.seen.get(name):
                continue
            if stamp is None:
                if self.rd.exists(f"tracking/{name}"):
                    self.rd.delete(f"tracking/{name}")
            else:
                self.rd.write_bytes(f"tracking/{name}", (self.local / name).read_bytes())
            self.seen[name] = stamp


class Reporter:
    """Everything the driver learns of a run: the one history of per-step metrics (with the
    diagnostics when due), throughput, the time limit, and what goes to the tracker."""

    def __init__(self, cfg: RunConfig, rd: RunDir,
                 diagnostics: Callable[[Params], dict[str, float]] | None = None) -> None:
        self.cfg, self.rd, self.diagnostics = cfg, rd, diagnostics
        self.local = _local_dir(rd)
        t = cfg.tracking
        self.tracker: Tracker = (MlflowTracker(t.uri, t.experiment, self.local, system_metrics=t.system_metrics)
                                 if t.enabled else NullTracker())
        self.history: list[tuple[int, dict[str, float]]] = []
        self.loop_start = time.perf_counter()
        self.mirror = SpillMirror(rd, self.local) if not rd.location.startswith("/") else None
        self.model_uri: str | None = None

    def _sync(self) -> None:
        if self.mirror is not None:
            try:
                self.mirror.sync()
            except Exception as exc:  # the run dir's store is down: try again at the next log step
                log.warning("could not write the tracking spill files to %s: %s", self.rd.uri("tracking"), exc)

    def time_up(self) -> bool:
        """Whether ``runtime.time_limit_s`` has passed since the step loop started."""
        limit = self.cfg.runtime.time_limit_s
        return limit is not None and time.perf_counter() - self.loop_start >= limit

    def tasks_per_s(self) -> float:
        """Tasks over the summed step times of the steps this session collected."""
        steps_s = sum(m["step_s"] for _, m in self.history)
        return self.cfg.runtime.meta_batch * len(self.history) / max(steps_s, 1e-9)

    def record(self, step: int, metrics: dict[str, float], params: Callable[[], Params], last: bool) -> dict[str, float]:
        """One collected step: diagnostics when due (``params`` fetches the parameters after
        it), the history, the tracker every ``tracking.log_every`` steps."""
        if self.diagnostics is not None and (step % self.cfg.tracking.log_every == 0 or last):
            metrics = metrics | self.diagnostics(params())
        self.step(step, metrics, last)
        return metrics

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    @property
    def tracking_uri(self) -> str | None:
        return getattr(self.tracker, "tracking_uri", None)

    def start(self, nodes: int) -> None:
        previous = json.loads(self.rd.read_text(TRACKING_FILE)).get("run_id") if self.rd.exists(TRACKING_FILE) else None
        name = self.rd.location.rstrip("/").rsplit("/", 1)[-1]
        tags = run_tags(nodes=nodes, workers=self.cfg.runtime.workers, run_dir=self.rd.location,
                        parent_run_id=self.cfg.tracking.parent_run_id)
        run_id = self.tracker.start(name, self.cfg.to_dict(), tags, resume_run_id=previous)
        if run_id:
            self.rd.write_text(TRACKING_FILE, json.dumps({"run_id": run_id, "uri": self.tracking_uri}))
            if previous is None:
                from distmeta.runtime.sources import dataset_input

                self.tracker.log_dataset(**dataset_input(self.cfg))

    def start_child(self, name: str, params: dict[str, Any]) -> str | None:
        """A new run nested under this run dir's training run (``distmeta eval``): the
        training run itself is never re-opened, so its tags and end time stay as they were."""
        parent = json.loads(self.rd.read_text(TRACKING_FILE)).get("run_id")
        tags = run_tags(run_dir=self.rd.location, parent_run_id=parent)
        return self.tracker.start(name, params, tags)

    def step(self, step: int, metrics: dict[str, float], last: bool) -> None:
        self.history.append((step, metrics))
        if step % self.cfg.tracking.log_every == 0 or last:
            self.tracker.log_metrics(step, {f"train/{k}": v for k, v in metrics.items()})
            self._sync()

    def finish(self, step: int | None, evaluation: Any | None, status: str = "FINISHED") -> None:
        """Artifacts (config, final checkpoint, plots, evaluation table), then end the run."""
        try:
            self._artifacts(step, evaluation, status)
        except Exception as exc:  # reporting must never lose the run itself
            log.warning("could not write the run's artifacts: %s", exc)
        self.tracker.end(status)
        self._sync()

    def _artifacts(self, step: int | None, evaluation: Any | None, status: str) -> None:
        self.local.mkdir(parents=True, exist_ok=True)
        config = self.local / "config.yaml"
        config.write_text(self.cfg.to_yaml())
        self.tracker.log_artifact(str(config))
        from distmeta.runtime.checkpoint import checkpoint_steps, load_checkpoint

        if step is not None and step in checkpoint_steps(self.rd):
            import torch

            ckpt = self.local / "final.pt"
            final = load_checkpoint(self.rd, step)  # every server shard's part, merged
            torch.save(final, ckpt)
            self.tracker.log_artifact(str(ckpt), "checkpoints")
            if status == "FINISHED" and self.cfg.tracking.log_model and self.run_id:
                params = self.local / "model_params.pt"
                torch.save({"step": step, "params": final["params"]}, params)
                self._log_model(config, params)
        curves = {k: [(s, m[k]) for s, m in self.history if k in m]
                  for k in ("query_loss", "query_loss_before", "query_acc", "grad_norm", "tasks_per_s",
                            "principal_angle_distance")}
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            self.tracker.log_artifact(str(training_curves(curves, self.local / "training_curves.png")), "plots")
        if evaluation is not None:
            self.log_evaluation(evaluation, step or 0)

    def _log_model(self, config: Path, params: Path) -> None:
        """The final parameters as an MLflow pyfunc model, with a signature from two held-out
        episodes (:mod:`distmeta.tracking.model`)."""
        from distmeta.runtime.sources import evaluation_batches
        from distmeta.tracking.model import log_model

        batch = next(iter(evaluation_batches(self.cfg, None, 2)))
        example = {"support_x": batch.support_x.numpy(), "support_y": batch.support_y.numpy(),
                   "query_x": batch.query_x.numpy()}
        self.model_uri = log_model(self.tracking_uri, self.run_id, str(config), str(params), example,
                                   self.cfg.tracking.registered_model)

    def log_evaluation(self, report: Any, step: int) -> None:
        """The meta-test at training step ``step``; the adaptation curve with the inner step
        as its step (``eval/<split>/curve/*``); the table and the plot as artifacts."""
        final = {f"eval/{report.split}/query_loss_pre": report.loss[0],
                 f"eval/{report.split}/query_loss_post": report.loss[-1]}
        if report.acc is not None:
            final |= {f"eval/{report.split}/query_acc_pre": report.acc[0],
                      f"eval/{report.split}/query_acc_post": report.acc[-1]}
        self.tracker.log_metrics(step, final)
        for i, inner in enumerate(report.steps):
            self.tracker.log_metrics(int(inner), {f"eval/{report.split}/curve/query_loss": report.loss[i]} | (
                {f"eval/{report.split}/curve/query_acc": report.acc[i]} if report.acc is not None else {}))
        self.tracker.log_dict({"split": report.split, "episodes": report.episodes, "rows": report.table()},
                              f"eval/{report.split}_table.json")
        self.local.mkdir(parents=True, exist_ok=True)
        plot = adaptation_curve(report.steps, report.loss, report.loss_ci95,
                                self.local / f"adaptation_{report.split}.png", ylabel="query loss")
        self.tracker.log_artifact(str(plot), "plots")
        self.tracker.flush()
