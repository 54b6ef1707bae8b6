"""Section ``gpu``: the GPU acceptance check, one command (``make bench ARGS="--only gpu"``),
a few minutes on one GPU. Skipped, with the reason, when torch sees no CUDA device.

- **1 vs 2 CUDA workers, bitwise.** ``distmeta train`` of Conv4 MAML 5-way 1-shot from packed
  shards (``runtime.deterministic: true``), once with one worker holding the GPU and once with
  two workers sharing it (``gpus_per_worker: 0.5``): the final parameters must be equal bit for
  bit.
  The same for ResNet-12 MAML (per-task loop, ``checkpoint_inner``, DropBlock 0.1: its masks
  are seeded by (seed, step, shard) on the worker's device).
- **Conv4 MAML on the GPU, in process**: tasks/s and peak memory of one worker's ``compute``.
- **Step overhead** of the 2-worker run: median step time minus median compute time.
- **Precision and memory, in process** (:func:`precision_check`): on Conv4 and ResNet-12 MAML,
  the meta-gradient under bf16 autocast against float32 (relative error, cosine), and
  ``checkpoint_inner`` against the plain unrolled loop (relative error), each with its time
  and peak memory.
- **Shards in one call** (:func:`fused_check`): whether several logical shards computed as
  one chunk give each shard the bits it gets alone on this device (the sinusoid MLP and
  Conv4). distmeta fuses only on the CPU, where it was measured; this says whether a GPU
  could too.

:func:`precision_check` and :func:`fused_check` take the device, so the CPU tests run them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from rich.console import Console

from benchmarks.report import print_table
from benchmarks.scaling import Plan, local_ray, overrides
from benchmarks.shards import pack_bench_shards


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _config(data: str, steps: int, workers: int, gpus: float, extra: list[str] | None = None):
    from distmeta.config import load_config

    plan = Plan(steps=steps, skip=2, nodes=())
    return load_config(None, [*overrides(plan, data, workers), f"runtime.gpus_per_worker={gpus}",
                              "runtime.cpus_per_worker=1", "runtime.deterministic=true", *(extra or [])])


def in_process(data: str, steps: int) -> dict[str, Any]:
    """One worker's compute on the GPU: tasks/s and peak memory."""
    import torch

    from distmeta.runtime.server import ParameterServer
    from distmeta.runtime.worker import MetaWorker

    cfg = _config(data, steps, 1, 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        server, worker = ParameterServer(cfg.to_dict(), tmp), MetaWorker(cfg.to_dict())
        shards = list(range(cfg.runtime.logical_shards))
        torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = worker.compute(step, shards, server.get())
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            server.apply(step, *out[1:])
    kept = times[2:] or times
    return {"device": torch.cuda.get_device_name(), "tasks_per_s": cfg.runtime.meta_batch / statistics.median(kept),
            "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20}


def one_vs_two(data: str, steps: int, tmp: str, extra: list[str] | None = None, tag: str = "conv4") -> dict[str, Any]:
    import torch

    from distmeta.runtime.run import train

    results = {}
    with local_ray():
        for workers, gpus in ((1, 1.0), (2, 0.5)):
            results[workers] = train(_config(data, steps, workers, gpus, extra), run_dir=f"{tmp}/gpu-{tag}-w{workers}",
                                     evaluate_at_end=False)
    a, b = results[1].params, results[2].params
    kept = [m for _, m in results[2].history[2:]] or [m for _, m in results[2].history]
    step_s, compute_s = (statistics.median(m[k] for m in kept) for k in ("step_s", "compute_s"))
    return {"bitwise_equal": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
            "tasks_per_s_1": results[1].tasks_per_s, "tasks_per_s_2": results[2].tasks_per_s,
            "step_s": step_s, "compute_s": compute_s, "overhead_s": step_s - compute_s}


RESNET12 = ["model.name=resnet12", "model.in_channels=1", "model.image_size=28", "model.channels=[64,160,320,640]",
            "model.drop_rate=0.1", "model.block_size=2", "model.pool=null", "algorithm.vectorize=false",
            "algorithm.checkpoint_inner=true", "algorithm.inner_steps=2", "algorithm.inner_lr=0.01",
            "runtime.meta_batch=8", "runtime.logical_shards=4"]
"""The ResNet-12 workload of the 1 vs 2 workers check: MetaOptNet's widths on Omniglot's 28 x 28."""


def _flat(grads: dict[str, Any]) -> Any:
    import torch

    return torch.cat([g.reshape(-1).float() for g in grads.values()])


def _compare(got: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    import torch

    a, b = _flat(got), _flat(reference)
    return {"relative_error": float((a - b).norm() / b.norm()),
            "cosine": float(torch.nn.functional.cosine_similarity(a, b, 0))}


def _timed(device: Any, fn: Any) -> tuple[Any, float, float]:
    """``fn()``, its seconds and (on CUDA) peak memory in MB."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0, (torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"))


def precision_check(device: str, quick: bool = False) -> list[dict[str, Any]]:
    """bf16 against float32 (vectorised MAML), ``checkpoint_inner`` against plain (ResNet-12,
    per-task loop, K = 2), on random 5-way 1-shot tasks on ``device``."""
    import torch

    from distmeta.models import conv4, resnet12
    from distmeta.types import EpisodeBatch

    dev = torch.device(device)
    widths = [8, 16, 32, 64] if quick else [64, 160, 320, 640]
    size, tasks = (16, 2) if quick else (84, 4)
    g = torch.Generator().manual_seed(0)

    def batch(image: int, channels: int) -> EpisodeBatch:
        x = torch.randn(tasks, 5, channels, image, image, generator=g)
        q = torch.randn(tasks, 15 if not quick else 5, channels, image, image, generator=g)
        y = torch.arange(5).repeat(tasks, 1)
        return EpisodeBatch(x, y, q, torch.arange(5).repeat_interleave(q.shape[1] // 5).repeat(tasks, 1)).to(dev)

    torch.manual_seed(0)
    models = {"conv4": (conv4(5, in_channels=3, image_size=size, hidden=32 if quick else 64), batch(size, 3)),
              "resnet12": (resnet12(5, image_size=size, channels=widths), batch(size, 3))}
    return [row for name, (model, b) in models.items() for row in _precision_rows(name, model.to(dev), b, dev)]


def _precision_rows(name: str, model: Any, b: Any, dev: Any) -> list[dict[str, Any]]:
    from distmeta.algorithms import MAML
    from distmeta.runtime.worker import autocast

    params = {k: v.detach() for k, v in model.named_parameters()}
    rule = MAML(inner_lr=0.01, inner_steps=1)
    ref, ref_s, ref_mb = _timed(dev, lambda: rule.meta_gradient(model, params, b).grads)

    def low() -> dict[str, Any]:
        with autocast(dev, "bf16"):
            return rule.meta_gradient(model, params, b).grads
    got, low_s, low_mb = _timed(dev, low)
    rows = [{"model": name, "what": "bf16 vs float32, vectorised, K=1", **_compare(got, ref),
             "s": low_s, "reference_s": ref_s, "peak_mb": low_mb, "reference_peak_mb": ref_mb}]
    if name == "resnet12":
        plain_rule = MAML(inner_lr=0.01, inner_steps=2, vectorize=False)
        ckpt_rule = MAML(inner_lr=0.01, inner_steps=2, vectorize=False, checkpoint_inner=True)
        plain, plain_s, plain_mb = _timed(dev, lambda: plain_rule.meta_gradient(model, params, b).grads)
        ckpt, ckpt_s, ckpt_mb = _timed(dev, lambda: ckpt_rule.meta_gradient(model, params, b).grads)
        rows.append({"model": name, "what": "checkpoint_inner vs plain, per-task loop, K=2", **_compare(ckpt, plain),
                     "s": ckpt_s, "reference_s": plain_s, "peak_mb": ckpt_mb, "reference_peak_mb": plain_mb})
    return rows


def fused_check(device: str) -> dict[str, bool]:
    """Whether shards computed as one chunk get the bits they get alone on ``device``."""
    import numpy as np
    import torch

    from distmeta.algorithms import MAML
    from distmeta.algorithms.chunk import Chunk
    from distmeta.models import conv4, mlp
    from distmeta.tasks import ImageClasses, Sinusoid
    from distmeta.types import EpisodeBatch

    dev = torch.device(device)
    images = np.random.default_rng(0).random((12, 6, 16, 16)).astype(np.float32)
    torch.manual_seed(0)
    cases = {"mlp": (mlp(hidden=(40, 40)), Sinusoid(shots=10, query=10)),
             "conv4": (conv4(3, image_size=16, hidden=8, pool="stride"), ImageClasses(images, way=3, shot=1, query=2))}
    rule, out = MAML(inner_lr=0.1, inner_steps=2), {}
    for name, (model, source) in cases.items():
        model = model.to(dev)
        params = {k: v.detach() for k, v in model.named_parameters()}
        batches = [source.sample(3, 0, 0, s).to(dev) for s in range(4)]
        together = rule.chunk_gradient(Chunk.grouped(model, params, EpisodeBatch.cat(batches), 4))[0]
        alone = [rule.chunk_gradient(Chunk.grouped(model, params, b, 1))[0] for b in batches]
        out[name] = all(torch.equal(together[k][s], alone[s][k][0]) for s in range(4) for k in params)
    return out


def run(quick: bool, console: Console) -> dict[str, Any]:
    if not cuda_available():
        console.print("gpu: skipped (torch sees no CUDA device)")
        return {"skipped": "torch sees no CUDA device"}
    steps = 10 if quick else 40
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-gpu-") as tmp:
        packed = pack_bench_shards(f"{tmp}/shards")
        single = in_process(packed.path, steps)
        pair = one_vs_two(packed.path, steps, tmp)
        deep = one_vs_two(packed.path, max(steps // 4, 4), tmp, RESNET12, "resnet12")
    checks, fused = precision_check("cuda", quick), fused_check("cuda")
    print_table(console, f"gpu: Conv4 MAML 5w1s, meta-batch 32, on {single['device']}", ["quantity", "value"], [
        ["1 vs 2 CUDA workers, final parameters bitwise equal", str(pair["bitwise_equal"])],
        ["tasks/s, one worker's compute in process", f"{single['tasks_per_s']:.0f}"],
        ["peak GPU memory, one worker (MB)", f"{single['peak_memory_mb']:.0f}"],
        ["tasks/s, distmeta train, 1 / 2 workers", f"{pair['tasks_per_s_1']:.0f} / {pair['tasks_per_s_2']:.0f}"],
        ["step overhead, 2 workers (ms): median step - median compute", f"{1000 * pair['overhead_s']:.2f}"],
        ["ResNet-12 MAML (checkpoint_inner, DropBlock): 1 vs 2 workers bitwise equal", str(deep["bitwise_equal"])],
        ["ResNet-12 MAML tasks/s, 1 / 2 workers", f"{deep['tasks_per_s_1']:.1f} / {deep['tasks_per_s_2']:.1f}"],
        ["shards in one call bit-identical on CUDA: MLP / Conv4", f"{fused['mlp']} / {fused['conv4']}"]])
    print_table(console, "gpu: precision and memory, in process", ["model", "check", "relative error", "cosine",
                                                                    "s (vs reference)", "peak MB (vs reference)"],
                [[r["model"], r["what"], f"{r['relative_error']:.2e}", f"{r['cosine']:.4f}",
                  f"{r['s']:.3f} ({r['reference_s']:.3f})", f"{r['peak_mb']:.0f} ({r['reference_peak_mb']:.0f})"]
                 for r in checks])
    return {"in_process": single, "one_vs_two": pair, "resnet12_one_vs_two": deep, "precision": checks,
            "fused_bitwise": fused, "shards": packed.to_dict() | {"path": None}}
