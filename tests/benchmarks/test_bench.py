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
    assert choose(None) == ["throughput", "memory", "deep", "runtime", "scaling", "data", "md", "flops", "longrun", "gpu"]
    assert choose(["tta"]) == ["tta"]  # time to accuracy: 35 minutes, never by default
    assert choose(["batch", "tta"]) == ["tta", "batch"]


def test_peak_by_allocation_sees_temporaries_and_by_operator_still_works():
    import torch

    def make() -> torch.Tensor:
        return torch.ones(1000, 1000).sum()  # a 4 MB temporary, freed before returning

    assert peak_allocated_bytes(make, per_allocation=True) >= 4_000_000
    assert 4_000_000 <= peak_allocated_bytes(make) <= 4_100_000  # the temporary, at the operator that made it


@pytest.mark.parametrize("second_order", [True, False])
def test_the_plain_loop_of_time_to_accuracy_computes_maml(second_order):
    """The loop distmeta is timed against must be the same rule: its gradient is MAML's."""
    import numpy as np
    import torch

    from benchmarks.time_to_accuracy import plain_meta_gradient
    from distmeta.algorithms import FOMAML, MAML
    from distmeta.models import conv4
    from distmeta.tasks import ImageClasses

    torch.manual_seed(0)
    model = conv4(3, image_size=16, hidden=4, pool="stride").double()
    images = np.random.default_rng(0).random((10, 6, 16, 16)).astype(np.float32)
    batch = ImageClasses(images, way=3, shot=1, query=2).sample(3, 0, 0, 0).to(dtype=torch.float64)
    rule = (MAML if second_order else FOMAML)(inner_lr=0.4)
    params = rule.init_params(model)
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    plain_meta_gradient(model, theta, batch, 0.4, second_order)
    ours = rule.meta_gradient(model, params, batch)
    for k, v in theta.items():
        torch.testing.assert_close(v.grad, ours.grads[k] / batch.n_tasks, rtol=1e-9, atol=1e-12)


def test_the_gpu_checks_run_on_the_cpu():
    """The GPU acceptance check's in-process parts take the device: here they run on the CPU,
    so the check cannot first break on the GPU machine."""
    from benchmarks.gpu import fused_check, precision_check

    rows = precision_check("cpu", quick=True)
    assert [(r["model"], r["what"].split()[0]) for r in rows] == [
        ("conv4", "bf16"), ("resnet12", "bf16"), ("resnet12", "checkpoint_inner")]
    assert rows[-1]["relative_error"] < 1e-5  # checkpointing recomputes the same float32 maths
    assert all(0 < r["relative_error"] < 1 and r["cosine"] > 0.5 for r in rows[:2])
    fused = fused_check("cpu")
    assert fused.keys() == {"mlp", "conv4"} and fused["mlp"] is True  # batched matrix products: what distmeta fuses


def test_meta_batch_table_reads_the_first_checkpoint_at_each_accuracy(tmp_path):
    import io

    from rich.console import Console

    from benchmarks.meta_batch_scaling import plot, protocol, report, runs

    assert len(runs()) == 10 and runs()[0] == (16, "none")
    assert protocol(64, "sqrt", 32_000) == ["runtime.meta_batch=64", "outer.lr_scaling=sqrt", "outer.lr_base_batch=16",
                                            "outer.steps=500", "outer.warmup_steps=17", "algorithm.first_order_steps=167"]
    points = [{"step": s, "tasks": 64 * s, "t_s": s / 10, "acc": a, "ci95": 0.01}
              for s, a in ((100, 0.89), (200, 0.931), (300, 0.95), (400, 0.949))]
    results = [{"meta_batch": 64, "rule": "sqrt", "peak_lr": 0.004, "steps": 400, "points": points, "wall_s": 40.0}]
    (row,) = report(results, 25_600, Console(file=io.StringIO()))
    assert row[3:7] == ["200 / 12,800", "200 / 12,800", "300 / 19,200", "-"]  # 90, 93, 95, 97%
    assert row[7] == "94.9 ± 1.0%"
    plot(results, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0
