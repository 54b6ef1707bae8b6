"""PNG figures for a run's artifacts: training curves and few-shot adaptation curves.

Figures are built with ``matplotlib.figure.Figure`` and its Agg canvas, never ``pyplot``, so no
global backend or figure registry is touched (safe in a long-lived driver without a display).
matplotlib is imported on first use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distmeta.rundir.storage import private, private_folder


def _new_figure(n_panels: int) -> tuple[Any, list[Any]]:
    """A figure with ``n_panels`` axes in a grid of at most 3 columns."""
    from matplotlib.figure import Figure

    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` as PNG at ``path`` (parents created) and return the path."""
    out = Path(path)
    private_folder(out.parent)
    fig.savefig(out, format="png", dpi=110)
    private(out)
    return out


def training_curves(
    history: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Plot each metric's ``(step, value)`` history in its own panel; write a PNG to ``path``.

    Raises:
        ValueError: ``history`` is empty, or a metric (named) has no points.
    """
    if not history:
        raise ValueError("training_curves needs at least one metric in history")
    for key, points in history.items():
        if len(points) == 0:
            raise ValueError(f"metric {key!r} has no (step, value) points to plot")
    fig, axes = _new_figure(len(history))
    for ax, (key, points) in zip(axes, sorted(history.items()), strict=True):
        steps, values = zip(*sorted(points), strict=True)
        ax.plot(steps, values, linewidth=1.2, marker="." if len(steps) < 50 else None)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def adaptation_curve(
    steps: Sequence[int], mean: Sequence[float], ci: Sequence[float],
    path: str | os.PathLike[str], ylabel: str, title: str | None = None,
) -> Path:
    """Plot ``mean`` against inner ``steps`` with a ``mean ± ci`` band; write a PNG to ``path``.

    Raises:
        ValueError: the three sequences are empty or differ in length (lengths named).
    """
    if not (len(steps) == len(mean) == len(ci)) or len(steps) == 0:
        raise ValueError(
            f"adaptation_curve needs equal, non-empty steps/mean/ci; got lengths "
            f"{len(steps)}/{len(mean)}/{len(ci)}")
    fig, (ax,) = _new_figure(1)
    low = [m - c for m, c in zip(mean, ci, strict=True)]
    high = [m + c for m, c in zip(mean, ci, strict=True)]
    ax.plot(steps, mean, marker="o", linewidth=1.5)
    ax.fill_between(steps, low, high, alpha=0.25, label="95% CI")
    ax.set_xlabel("inner steps")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def compare_curves(runs: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike[str],
                   metric: str, title: str | None = None, log_y: bool = False) -> Path:
    """One panel: ``metric`` over steps for each labelled run; a PNG at ``path``."""
    if not runs or any(len(points) == 0 for points in runs.values()):
        raise ValueError(f"compare_curves: every run needs points of {metric!r}")
    fig, (ax,) = _new_figure(1)
    fig.set_size_inches(6.4, 4.0)
    for label, points in runs.items():
        steps, values = zip(*sorted(points), strict=True)
        ax.plot(steps, values, linewidth=1.4, label=label)
    ax.set_xlabel("outer step")
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)
