"""Meta-Dataset's published results (Triantafillou et al., ICLR 2020, Table 1: the paper's
baselines, test accuracy in % over 600 episodes per source with 95% CIs, ResNet-18 or the
best backbone per method), as the official repository's leaderboard lists them
(google-research/meta-dataset README, rows marked [1]), and a run's rank among them.

Two settings: ``imagenet`` (meta-trained on ILSVRC-2012's training classes only) and ``all``
(on the training classes of the first eight sources; Traffic Signs and MSCOCO are test-only
in both). Ranks are per source by mean accuracy, 1 the best, ties sharing the mean of their
places; the average rank is over the sources a run was tested on.
"""

from __future__ import annotations

from typing import Any

SOURCES = ("ilsvrc_2012", "omniglot", "aircraft", "cu_birds", "dtd", "quickdraw", "fungi", "vgg_flower",
           "traffic_sign", "mscoco")
"""The official conversion's folder names, in the paper's column order."""

PAPER: dict[str, dict[str, tuple[float, ...]]] = {
    "imagenet": {
        "k-NN": (41.03, 37.07, 46.81, 50.13, 66.36, 32.06, 36.16, 83.10, 44.59, 30.38),
        "Finetune": (45.78, 60.85, 68.69, 57.31, 69.05, 42.60, 38.20, 85.51, 66.79, 34.86),
        "MatchingNet": (45.00, 52.27, 48.97, 62.21, 64.15, 42.87, 33.97, 80.13, 47.80, 34.99),
        "ProtoNet": (50.50, 59.98, 53.10, 68.79, 66.56, 48.96, 39.71, 85.27, 47.12, 41.00),
        "fo-MAML": (45.51, 55.55, 56.24, 63.61, 68.04, 43.96, 32.10, 81.74, 50.93, 35.30),
        "RelationNet": (34.69, 45.35, 40.73, 49.51, 52.97, 43.30, 30.55, 68.76, 33.67, 29.15),
        "fo-Proto-MAML": (49.53, 63.37, 55.95, 68.66, 66.49, 51.52, 39.96, 87.15, 48.83, 43.74),
    },
    "all": {
        "k-NN": (38.55, 74.60, 64.98, 66.35, 63.58, 44.88, 37.12, 83.47, 40.11, 29.55),
        "Finetune": (43.08, 71.11, 72.03, 59.82, 69.14, 47.05, 38.16, 85.28, 66.74, 35.17),
        "MatchingNet": (36.08, 78.25, 69.17, 56.40, 61.80, 60.81, 33.70, 81.90, 55.57, 28.79),
        "ProtoNet": (44.50, 79.56, 71.14, 67.01, 65.18, 64.88, 40.26, 86.85, 46.48, 39.87),
        "fo-MAML": (37.83, 83.92, 76.41, 62.43, 64.16, 59.73, 33.54, 79.94, 42.91, 29.37),
        "RelationNet": (30.89, 86.57, 69.71, 54.14, 56.56, 61.75, 32.56, 76.08, 37.48, 27.41),
        "fo-Proto-MAML": (46.52, 82.69, 75.23, 69.88, 68.25, 66.84, 41.99, 88.72, 52.42, 41.74),
    },
}


def setting(training_sources: list[str]) -> str:
    """``imagenet`` when a run meta-trained on ILSVRC-2012 alone, else ``all``."""
    return "imagenet" if list(training_sources) == ["ilsvrc_2012"] else "all"


def _places(values: list[float]) -> list[float]:
    """Fractional ranks, 1 for the highest; equal values share the mean of their places."""
    order = sorted(values, reverse=True)
    return [sum(i + 1 for i, v in enumerate(order) if v == x) / order.count(x) for x in values]


def rank(accuracy: dict[str, float], which: str, name: str = "this run") -> dict[str, Any]:
    """The run's place among the paper's methods on each source it was tested on (``accuracy``
    in %, by source name), their average, and every method's average over those sources."""
    table = PAPER[which]
    shared = [s for s in SOURCES if s in accuracy]
    if not shared:
        return {}
    methods = [*table, name]
    per_source: dict[str, dict[str, float]] = {}
    for s in shared:
        column = [table[m][SOURCES.index(s)] for m in table] + [accuracy[s]]
        per_source[s] = dict(zip(methods, _places(column), strict=True))
    average = {m: sum(per_source[s][m] for s in shared) / len(shared) for m in methods}
    return {"setting": which, "sources": shared, "rank": {s: per_source[s][name] for s in shared},
            "average_rank": average[name], "paper_average_ranks": {m: average[m] for m in table}}
