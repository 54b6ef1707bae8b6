"""``make bench`` (``python -m benchmarks.run``): every section measured side by side in one
process, written to JSON. Run from the repository root; nothing here is installed with distmeta.

Sections (``--only`` takes their names): ``throughput``, ``memory``, ``runtime``, ``scaling``,
``data``, ``flops``, ``longrun``, ``gpu`` (the GPU acceptance check; skipped without CUDA), and
``tta`` (time to accuracy against a plain loop: 35 minutes) and ``batch`` (steps to an
accuracy at four meta-batches: 60 minutes), these two only with ``--only``. Each
returns a JSON-able dict and prints a table of ratios measured in this run.
Per-core figures run with ``torch.set_num_threads(1)``. The JSON file is rewritten after
every section, so a run that is stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.timing import load_average, machine_info, threads

log = logging.getLogger(__name__)
Section = Callable[[bool, Console], dict[str, Any]]
SECTION_NAMES = ("throughput", "memory", "deep", "runtime", "scaling", "data", "md", "flops", "longrun", "gpu", "tta",
                 "batch")
DEFAULT = SECTION_NAMES[:-2]
"""What ``make bench`` runs without ``--only``: ``tta`` (time to accuracy) takes 35 minutes,
``batch`` (steps to an accuracy at four meta-batches) 60."""


def sections() -> dict[str, Section]:
    """Section name -> its ``run(quick, console)`` (imported lazily: ``scaling`` brings Ray)."""
    def lazy(module: str) -> Section:
        def call(quick: bool, console: Console) -> dict[str, Any]:
            import importlib

            return importlib.import_module(f"benchmarks.{module}").run(quick, console)
        return call

    return {"throughput": lazy("throughput"), "memory": lazy("peak_memory"), "deep": lazy("deep_memory"), "runtime": lazy("runtime_overhead"),
            "scaling": lazy("scaling"), "data": lazy("data_rate"), "flops": lazy("flops"), "longrun": lazy("long_runs"), "gpu": lazy("gpu"),
            "tta": lazy("time_to_accuracy"), "md": lazy("meta_dataset"),
            "batch": lazy("meta_batch_scaling")}


def choose(only: list[str] | None) -> list[str]:
    """The sections to run, in the canonical order; unknown names are an error naming them."""
    if not only:
        return list(DEFAULT)
    unknown = sorted(set(only) - set(SECTION_NAMES))
    if unknown:
        raise ValueError(f"bench --only {' '.join(unknown)}: unknown section(s); expected some of {list(SECTION_NAMES)}")
    return [name for name in SECTION_NAMES if name in only]


def jsonable(value: Any) -> Any:
    """Non-finite floats become ``None`` (JSON has no NaN); containers are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(results), indent=2, sort_keys=False))
    tmp.replace(out)


def run_section(name: str, fn: Section, quick: bool, console: Console) -> dict[str, Any]:
    """One section's results, with its wall time and the machine load around it; an error
    in one section is recorded and the others still run."""
    console.rule(f"[bold]{name}")
    load_before, start = load_average(), time.perf_counter()
    try:
        with threads(1):
            result = fn(quick, console)
    except Exception as exc:
        log.exception("bench section %s failed", name)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["section_wall_s"] = time.perf_counter() - start
    result["load_average_before"], result["load_average_after"] = load_before, load_average()
    console.print(f"[dim]{name}: {result['section_wall_s']:.1f} s[/dim]")
    return result


def run_bench(out: str, quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections (all by default) and write their results to the JSON file ``out``."""
    names = choose(only)
    console = Console(width=None if sys.stdout.isatty() else 120)
    path = Path(out)
    start = time.perf_counter()
    results: dict[str, Any] = {"meta": {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                                        "quick": quick, "sections": names, "machine": machine_info(),
                                        "per_core_threads": 1}}
    table = sections()
    for name in names:
        results[name] = run_section(name, table[name], quick, console)
        results["meta"]["wall_s"] = time.perf_counter() - start
        write(path, results)
    console.print(f"bench: {len(names)} section(s) in {results['meta']['wall_s']:.1f} s -> {path}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench.json", help="where to write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    parser.add_argument("--only", nargs="*", default=None, help=f"run only these sections: {', '.join(SECTION_NAMES)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_bench(args.out, quick=args.quick, only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
