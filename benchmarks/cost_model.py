"""The step-time cost model of ``COST_MODEL.md``, evaluated with this run's measurements.

    T_step(N) = c M / min(N, cores) + L + (N + R) 4P / B + s R P + o P

``c`` seconds of compute per task on one core, ``M`` tasks per step, ``N`` workers, ``R``
logical shards, ``P`` parameters (float32), ``B`` object-store bandwidth into and out of the
server's node, ``s``/``o`` the server's seconds per float summed / per parameter updated,
``L`` the fixed per-step latency of the driver loop (Ray calls, serialisation, scheduling).
``c`` and ``L`` come from the one-worker local run, ``s``/``o`` from timing the server alone,
``B`` from object-store round trips; every other run is then a prediction to check.
"""

from __future__ import annotations

from typing import Any

from benchmarks.server_cost import predict_server_s
from benchmarks.timing import ratio

TEN_GBE = 1.25e9  # bytes/s
TWENTY_FIVE_GBE = 3.125e9  # bytes/s
RESNET12_PARAMS = 12_400_000  # the MetaOptNet/TADAM ResNet-12 (64-160-320-640)


def conv4_params(way: int = 5) -> int:
    from distmeta.models import conv4

    return sum(p.numel() for p in conv4(way).parameters())


def moved_s(n: int, shards: int, params: int, bandwidth: float) -> float:
    """Broadcast of P floats to ``n`` workers plus gather of R shard sums of P floats."""
    return (n + shards) * 4 * params / bandwidth


def server_side_s(params: int, n: int, bandwidth: float, fit: dict[str, float]) -> float:
    """One server's per-step time with R = N shard sums of P floats arriving over one link."""
    return n * (4 * params / bandwidth + fit["s_per_float_summed"] * params) + fit["o_per_param"] * params


def overhead_at_scale(params: int, workers: int, per_node: int, server_shards: int, bandwidth: float,
                      fit: dict[str, float], latency: float, tree: bool = True) -> float:
    """Per-step time beyond compute: with the tree and node aggregation each server shard
    receives one 4P/S-byte sum per node and sends the new P/S parameters to each node once;
    it sums ``nodes`` of them and steps P/S parameters. Without the tree it receives one sum
    per logical shard (R = ``workers`` here)."""
    nodes = -(-workers // per_node)
    inputs = nodes if tree else workers
    piece = params / server_shards
    return latency + (inputs + nodes) * 4 * piece / bandwidth + fit["s_per_float_summed"] * inputs * piece \
        + fit["o_per_param"] * piece


def break_even_workers(per_task_s: float, meta_batch: int, params: int, bandwidth: float,
                       fit: dict[str, float]) -> float:
    """Workers N* beyond which the server's per-step work (R = N) exceeds each worker's
    compute ``per_task_s * meta_batch / N``: the root of N^2 (4P/B + sP) + N oP = c M."""
    a = 4 * params / bandwidth + fit["s_per_float_summed"] * params
    b = fit["o_per_param"] * params
    c = per_task_s * meta_batch
    return float((-b + (b * b + 4 * a * c) ** 0.5) / (2 * a))


def predictions(result: dict[str, Any], fit: dict[str, float], constants: dict[str, float]) -> dict[str, Any]:
    """Predicted vs measured step time of every run but the one the constants came from."""
    plan, cores = result["plan"], result["cores"] or 1
    out = {}
    for where, bw_key in (("local", "B_same_node"), ("cluster", "B_across_nodes")):
        bandwidth = constants.get(bw_key) or constants["B_same_node"]
        for n, run in result[where]["runs"].items():
            if where == "local" and n == "1":
                continue
            w = int(n)
            predicted = (constants["c"] * plan["meta_batch"] / min(w, cores) + constants["L"]
                         + moved_s(w, plan["shards"], constants["P"], bandwidth)
                         + predict_server_s(fit, plan["shards"], constants["P"]))
            out[f"{where} {n}"] = {"predicted_step_s": predicted, "measured_step_s": run["step_s"],
                                   "measured_over_predicted": ratio(run["step_s"], predicted)}
    return out


def check_model(result: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    """Constants from this run, predictions beside measurements, and what-if scenarios."""
    plan, fit = result["plan"], server["fit"]
    params, shards = conv4_params(), plan["shards"]
    one = result["local"]["runs"]["1"]
    same = result["local"]["transfer_same_node"]["bandwidth_bytes_per_s"]
    across = (result["cluster"].get("transfer_across_nodes") or {}).get("bandwidth_bytes_per_s")
    c = one["compute_s"] / plan["meta_batch"]
    latency = max(one["other_s"] - moved_s(1, shards, params, same), 0.0)
    constants = {"P": params, "R": shards, "c": c, "L": latency, "s": fit["s_per_float_summed"],
                 "o": fit["o_per_param"], "B_same_node": same, "B_across_nodes": across,
                 "server_fit_max_rel_residual": fit["max_rel_residual"],
                 "server_s_predicted": predict_server_s(fit, shards, params),
                 "server_s_measured_1_worker": one["server_s"]}
    scenarios = {f"server-side s/step, P={name}, N=R={n}, 10GbE": server_side_s(p, n, TEN_GBE, fit)
                 for name, p in (("conv4", params), ("10M", 10**7), ("100M", 10**8)) for n in (8, 64)}
    scenarios["N* (server = compute), conv4, this CPU, M=32, 10GbE"] = break_even_workers(c, 32, params, TEN_GBE, fit)
    scenarios["N* (server = compute), conv4, 100x faster compute (GPU), M=32, 10GbE"] = break_even_workers(
        c / 100, 32, params, TEN_GBE, fit)
    for k in (1, 8):
        scenarios[f"step overhead s, ResNet-12 (P=12.4M), 64 GPU workers on 8 nodes, 25GbE, {k} server shard(s)"] = \
            overhead_at_scale(RESNET12_PARAMS, 64, 8, k, TWENTY_FIVE_GBE, fit, latency)
    scenarios["step overhead s, same, 1 server, one sum per logical shard (no tree), R=64"] = overhead_at_scale(
        RESNET12_PARAMS, 64, 8, 1, TWENTY_FIVE_GBE, fit, latency, tree=False)
    return {"server": server, "constants": constants, "predictions": predictions(result, fit, constants),
            "scenarios": scenarios}
