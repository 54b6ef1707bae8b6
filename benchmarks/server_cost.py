"""The constants of the cost model (``COST_MODEL.md``), measured: server work and transfers.

* Server: :class:`distmeta.runtime.server.ParameterServer` is a plain class, so its
  ``apply`` (sum R shard gradients of P floats in shard order, divide, global norm, Adam) is
  timed in-process, with no Ray, for several (R, P), and fitted as
  ``t_server = c0 + s * R * P + o * P`` (seconds; ``s`` per float summed, ``o`` per parameter).
* Transfers: one object-store round trip of a ``(step, params)`` state of P floats from the
  driver to an actor, less the round trip of an empty state, gives the seconds to move P
  floats, hence an effective bandwidth ``B`` (bytes/s), on one node (shared memory) and
  between two loopback "nodes" of a ``ray.cluster_utils.Cluster`` (object manager over TCP).

Ray is imported only inside the functions that need a running Ray (this package's one
exception to "Ray lives in runtime/": the bench drives the real runtime).
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import numpy as np
import torch

from benchmarks.timing import time_call
from distmeta.config import load_config
from distmeta.runtime.server import ParameterServer

log = logging.getLogger(__name__)


class Probe:
    """An actor that receives a state and reports its size (the transfer is the work)."""

    def nbytes(self, state: tuple[int, dict[str, torch.Tensor]]) -> int:
        return sum(t.numel() * t.element_size() for t in state[1].values())


def server_config(width: int, shards: int) -> dict[str, Any]:
    """A run config whose model (an MLP ``1-width-width-1``) has about ``width**2`` parameters."""
    cfg = load_config(None, [f"model.hidden=[{width}, {width}]", f"runtime.meta_batch={shards}",
                             f"runtime.logical_shards={shards}", "runtime.workers=1",
                             "tracking.enabled=false", "checkpoint.every=1000000"])
    return cfg.to_dict()


def time_apply(width: int, shards: int, repeats: int) -> dict[str, Any]:
    """Median seconds of one ``ParameterServer.apply`` with ``shards`` shard results."""
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-ps-") as run_dir:
        server = ParameterServer(server_config(width, shards), run_dir)
        torch.set_num_threads(1)  # the server sets its own thread count; keep one core
        # distinct tensors per shard, as the workers send: summing them streams R * P floats
        results = [[(r, r + 1, {k: torch.randn_like(v) * 1e-3 for k, v in server.params.items()}, 1)]
                   for r in range(shards)]
        timing = time_call(lambda: server.apply(server.step, *results), repeats=repeats, warmup=1)
        n_params = sum(v.numel() for v in server.params.values())
    return {"width": width, "shards": shards, "params": n_params, **timing.to_dict()}


def fit_server(points: list[dict[str, Any]]) -> dict[str, float]:
    """Least squares in relative error, ``t = c0 + s * R * P + o * P``, over the points
    (relative, so the small-P points count as much as the large ones)."""
    a = np.array([[1.0, p["shards"] * p["params"], p["params"]] for p in points])
    t = np.array([p["median_s"] for p in points])
    (c0, s, o), *_ = np.linalg.lstsq(a / t[:, None], np.ones_like(t), rcond=None)
    predicted = a @ np.array([c0, s, o])
    worst = float(np.max(np.abs(predicted - t) / t))
    return {"c0_s": float(c0), "s_per_float_summed": float(s), "o_per_param": float(o),
            "max_rel_residual": worst}


def server_model(quick: bool) -> dict[str, Any]:
    """Timed ``apply`` over a grid of (R, P) and the fitted constants."""
    widths = (316, 1000) if quick else (316, 1000, 3162)
    shard_counts = (2, 8) if quick else (2, 8, 16)
    points = [time_apply(w, r, 2 if quick else 3) for w in widths for r in shard_counts]
    return {"points": points, "fit": fit_server(points)}


def predict_server_s(fit: dict[str, float], shards: int, params: int) -> float:
    return fit["c0_s"] + fit["s_per_float_summed"] * shards * params + fit["o_per_param"] * params


def fit_transfer(points: list[dict[str, Any]]) -> dict[str, float]:
    """Least squares ``t = latency + bytes / B`` over round trips of several sizes."""
    a = np.array([[1.0, p["bytes"]] for p in points])
    t = np.array([p["round_trip_s"] for p in points])
    (latency, per_byte), *_ = np.linalg.lstsq(a, t, rcond=None)
    return {"latency_s": float(latency), "bandwidth_bytes_per_s": float(1.0 / per_byte) if per_byte > 0 else float("inf")}


def transfer_rate(sizes: tuple[int, ...], repeats: int, actor_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Round trips driver -> object store -> actor of a ``(step, params)`` state of P floats,
    for P in ``sizes`` (and an empty state), fitted as latency + bytes / B. Needs a running Ray."""
    import ray

    probe = ray.remote(Probe).options(**(actor_options or {"num_cpus": 0})).remote()

    def round_trip(n: int) -> float:
        state = (0, {"w": torch.randn(n)})
        return time_call(lambda: ray.get(probe.nbytes.remote(ray.put(state))), repeats=repeats, warmup=1).median_s

    try:
        points = [{"floats": n, "bytes": 4 * n, "round_trip_s": round_trip(n)} for n in (1, *sizes)]
    finally:
        ray.kill(probe)
    return {"points": points, **fit_transfer(points)}
