"""What a run directory records in its tracker (MLflow by default), written by the driver only.

One :class:`RunTracking` per run directory: it chooses the spill directory once, opens the
directory's run (a new one, or the one ``tracking.json`` names, so a resumed run continues the
same MLflow run), and is the only way a training run, a sweep or an evaluation talks to the
tracker. Params: the resolved config, flattened. Tags: versions, git commit, nodes, workers,
run dir. Metrics (every ``tracking.log_every`` steps, batched): ``train/*``. Artifacts: the
resolved config, the final checkpoint, PNG plots of the training curves and the adaptation
curve, the evaluation table, and the final parameters as a pyfunc model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from distmeta import plugins
from distmeta.config import RunConfig
from distmeta.rundir import layout
from distmeta.rundir.checkpoint import checkpoint_steps, load_checkpoint
from distmeta.rundir.storage import RunDir, is_uri, private, private_folder
from distmeta.tasks.sources import dataset_input, evaluation_batches
from distmeta.tracking.base import NullTracker, Tracker
from distmeta.tracking.mirror import SpillMirror
from distmeta.tracking.mlflow_tracker import MlflowTracker, TrackerOptions
from distmeta.tracking.plots import adaptation_curve, training_curves
from distmeta.tracking.tags import run_tags

log = logging.getLogger(__name__)
CURVES = ("query_loss", "query_loss_before", "query_acc", "grad_norm", "tasks_per_s", "principal_angle_distance")
"""The training metrics plotted in ``plots/training_curves.png``."""


def make_tracker(cfg: RunConfig, spill_dir: Path) -> Tracker:
    """The tracker ``cfg.tracking`` asks for: MLflow, or one that records nothing."""
    t = cfg.tracking
    if not t.enabled:
        return NullTracker()
    return MlflowTracker(t.uri, t.experiment, spill_dir, options=TrackerOptions(system_metrics=t.system_metrics))


class RunTracking:
    """The tracked run of one run directory."""

    def __init__(self, cfg: RunConfig, rd: RunDir, tracker: Tracker | None = None) -> None:
        self.cfg, self.rd = cfg, rd
        self.local = layout.spill_dir(rd)
        self.tracker = tracker if tracker is not None else make_tracker(cfg, self.local)
        self.mirror = SpillMirror(rd, self.local) if is_uri(rd.location) else None
        self.model_uri: str | None = None

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id

    @property
    def tracking_uri(self) -> str | None:
        return self.tracker.tracking_uri

    def _sync(self) -> None:
        if self.mirror is not None:
            try:
                self.mirror.sync()
            except Exception as exc:  # the run dir's store is down: try again at the next log step
                log.warning("could not write the tracking spill files to %s: %s", self.rd.uri(layout.SPILL), exc)

    # -- opening ---------------------------------------------------------------------------
    def open(self, params: dict[str, Any], **tags: Any) -> bool:
        """Open the directory's run: the one ``tracking.json`` names, else a new one (its id
        is then written there). ``tags`` are :func:`run_tags`'s arguments. Whether the run is
        new."""
        previous = (layout.read_tracking(self.rd) or {}).get("run_id")
        run_id = self.tracker.start(layout.run_name(self.rd), params, run_tags(run_dir=self.rd.location, **tags),
                                    resume_run_id=previous)
        if run_id:
            layout.write_tracking(self.rd, run_id, self.tracking_uri)
        return previous is None

    def open_training(self, **tags: Any) -> None:
        """The training run: the resolved config as params, nested under ``tracking.parent_run_id``
        (a sweep's); a new run also records its data set as an input."""
        if self.open(self.cfg.to_dict(), parent_run_id=self.cfg.tracking.parent_run_id, **tags):
            self.tracker.log_dataset(**dataset_input(self.cfg))

    def open_child(self, name: str, params: dict[str, Any]) -> str | None:
        """A new run nested under the directory's run (``distmeta eval``): the training run
        itself is never re-opened, so its tags and end time stay as they were."""
        parent = (layout.read_tracking(self.rd) or {}).get("run_id")
        return self.tracker.start(name, params, run_tags(run_dir=self.rd.location, parent_run_id=parent))

    # -- recording -------------------------------------------------------------------------
    def log_step(self, step: int, metrics: dict[str, float], logged: bool = True) -> None:
        """One step's ``train/*`` metrics, when the step is ``logged`` (every
        ``tracking.log_every``-th and the last: the run's one decision, :meth:`Pipeline.reports`)."""
        if logged:
            self.tracker.log_metrics(step, {f"train/{k}": v for k, v in metrics.items()})
            self._sync()

    def log_evaluation(self, report: Any, step: int) -> None:
        """The meta-test at training step ``step``; the adaptation curve with the inner step
        as its step (``eval/<split>/curve/*``); the table and the plot as artifacts."""
        split = report.split
        final = {f"eval/{split}/query_loss_pre": report.loss[0], f"eval/{split}/query_loss_post": report.loss[-1]}
        if report.acc is not None:
            final |= {f"eval/{split}/query_acc_pre": report.acc[0], f"eval/{split}/query_acc_post": report.acc[-1]}
        for name, part in getattr(report, "sources", {}).items():
            final |= {f"eval/{split}/{name}/query_acc_post": part.acc[-1],
                      f"eval/{split}/{name}/query_acc_ci95": part.acc_ci95[-1],
                      f"eval/{split}/{name}/query_loss_post": part.loss[-1]}
        ranking = getattr(report, "ranking", {})
        if ranking:
            final[f"eval/{split}/average_rank_{ranking['setting']}"] = ranking["average_rank"]
        self.tracker.log_metrics(step, final)
        for i, inner in enumerate(report.steps):
            self.tracker.log_metrics(int(inner), {f"eval/{split}/curve/query_loss": report.loss[i]} | (
                {f"eval/{split}/curve/query_acc": report.acc[i]} if report.acc is not None else {}))
        self.tracker.log_dict({"split": split, "episodes": report.episodes, "rows": report.table(),
                               "sources": {n: {"episodes": p.episodes, "rows": p.table()}
                                           for n, p in getattr(report, "sources", {}).items()},
                               "ranking": getattr(report, "ranking", {})},
                              f"eval/{split}_table.json")
        private_folder(self.local)
        plot = adaptation_curve(report.steps, report.loss, report.loss_ci95,
                                self.local / layout.adaptation_plot(split), ylabel="query loss")
        self.tracker.log_artifact(str(plot), "plots")
        self.tracker.flush()

    def finish(self, step: int | None, history: list[tuple[int, dict[str, float]]], evaluation: Any | None,
               status: str = "FINISHED") -> None:
        """Artifacts (config, final checkpoint, model, plots, evaluation), then end the run."""
        try:
            self._artifacts(step, history, evaluation, status)
        except Exception as exc:  # reporting must never lose the run itself
            log.warning("could not write the run's artifacts: %s", exc)
        self.end(status)

    def fail(self, tags: dict[str, Any]) -> None:
        """Say on the run why it failed (its status is set by :meth:`finish`)."""
        self.tracker.set_tags({k: str(v) for k, v in tags.items()})

    def end(self, status: str) -> None:
        """End the run ``status``; for a run dir on a URI, the spill written back and the
        local staging folder removed."""
        self.tracker.end(status)
        self._sync()
        if self.mirror is not None:
            self.mirror.remove_staging()

    def _artifacts(self, step: int | None, history: list[tuple[int, dict[str, float]]], evaluation: Any | None,
                   status: str) -> None:
        private_folder(self.local)
        config = self.local / layout.CONFIG
        config.write_text(self.cfg.to_yaml())
        private(config)
        self.tracker.log_artifact(str(config))
        if step is not None and step in checkpoint_steps(self.rd):
            final = load_checkpoint(self.rd, step)  # every server shard's part, merged
            torch.save(final, self.local / layout.FINAL_CHECKPOINT)
            private(self.local / layout.FINAL_CHECKPOINT)
            self.tracker.log_artifact(str(self.local / layout.FINAL_CHECKPOINT), layout.CHECKPOINTS)
            if status == "FINISHED" and self.cfg.tracking.log_model:
                given = [n for n in (self.cfg.model.name, self.cfg.task.family, self.cfg.algorithm.name)
                         if n.startswith("given-")]
                if given:
                    log.info("no MLflow model logged: %s were Python objects handed to distmeta.fit; name them by "
                             "import path (package.module:attr) to log one", ", ".join(given))
                else:
                    self._log_model(config, {"step": step, "params": final["params"]})
        curves = {k: [(s, m[k]) for s, m in history if k in m] for k in CURVES}
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            plot = training_curves(curves, self.local / layout.TRAINING_CURVES)
            self.tracker.log_artifact(str(plot), "plots")
        if evaluation is not None:
            self.log_evaluation(evaluation, step or 0)

    def _log_model(self, config: Path, state: dict[str, Any]) -> None:
        """The final parameters as a pyfunc model, with a signature from two held-out episodes."""
        params = self.local / layout.MODEL_PARAMS
        torch.save(state, params)
        private(params)
        batch = next(iter(evaluation_batches(self.cfg, None, 2)))
        example = {"support_x": batch.support_x.numpy(), "support_y": batch.support_y.numpy(),
                   "query_x": batch.query_x.numpy()}
        code = plugins.local_code(self.cfg.import_paths())
        self.model_uri = self.tracker.log_model(str(config), str(params), example,
                                                self.cfg.tracking.registered_model, code)
