"""`make bench` (`python -m benchmarks.run`) in quick mode: the JSON it writes has the expected shape, and the memory
figures show the behaviour the papers report (iMAML flat in the inner steps, MAML growing).

Behaviour only: no timing is asserted (speed depends on the machine and its load).
"""

from __future__ import annotations

import json

import pytest

from benchmarks.memory import peak_allocated_bytes
from benchmarks.run import choose, run_bench

RULES = ("maml", "fomaml", "imaml")
WORKLOADS = ("sinusoid", "conv4")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "b.json"
    run_bench(str(out), quick=True, only=["throughput", "memory"])
    return json.loads(out.read_text())


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_only_the_chosen_sections_are_written(bench):
    assert set(bench) == {"meta", "throughput", "memory"}
    assert bench["meta"]["quick"] is True
    assert bench["meta"]["sections"] == ["throughput", "memory"]
    assert "error" not in bench["throughput"] and "error" not in bench["memory"]


def test_throughput_has_both_paths_for_every_rule_and_workload(bench):
    workloads = bench["throughput"]["workloads"]
    assert set(workloads) == set(WORKLOADS)
    for w in workloads.values():
        assert positive(w["meta_batch"]) and positive(w["params"])
        assert set(w["rules"]) == set(RULES)
        for r in w["rules"].values():
            for key in ("vectorized_tasks_per_s", "loop_tasks_per_s", "ratio_vectorized_over_loop"):
                assert positive(r[key]), key


def test_anchor_libraries_join_the_timing_with_distmeta_s_gradient(bench):
    """higher and TorchOpt are installed beside the suite (``make anchors``); learn2learn only
    where someone built it (its sdist does not build on Python 3.11), else the reason is kept."""
    found = bench["throughput"]["workloads"]["sinusoid"]["rules"]["maml"]["anchors"]
    assert set(found) == {"higher", "learn2learn", "torchopt"}
    for name in ("higher", "torchopt"):
        assert found[name]["available"] and "error" not in found[name], found[name]
    for info in found.values():
        if not info["available"]:
            assert info["error"]  # why it could not be used
            continue
        assert info["rel_err_vs_loop"] < 1e-4  # the same MAML gradient
        assert positive(info["tasks_per_s"]) and positive(info["ratio_over_vectorized"])


def test_memory_imaml_is_flat_in_inner_steps_and_maml_grows(bench):
    workloads = bench["memory"]["workloads"]
    assert set(workloads) == set(WORKLOADS)
    for name, w in workloads.items():
        imaml, maml = w["rules"]["imaml"], w["rules"]["maml"]
        for r in (imaml, maml):
            assert set(r["peak_bytes"]) == {"1", "5", "10", "20"}
            assert all(positive(v) for v in r["peak_bytes"].values())
        assert imaml["ratio_to_k1"]["20"] <= 1.2, name
        assert maml["ratio_to_k1"]["20"] >= 2.0, name
        assert maml["peak_bytes"]["20"] > maml["peak_bytes"]["5"] > maml["peak_bytes"]["1"], name


def test_unknown_sections_are_named():
    with pytest.raises(ValueError, match="nonsense"):
        choose(["memory", "nonsense"])
    assert choose(None) == ["throughput", "memory", "deep", "runtime", "scaling", "data", "flops", "longrun", "gpu"]


def test_peak_by_allocation_sees_temporaries_and_by_operator_still_works():
    import torch

    def make() -> torch.Tensor:
        return torch.ones(1000, 1000).sum()  # a 4 MB temporary, freed before returning

    assert peak_allocated_bytes(make, per_allocation=True) >= 4_000_000
    assert 4_000_000 <= peak_allocated_bytes(make) <= 4_100_000  # the temporary, at the operator that made it
