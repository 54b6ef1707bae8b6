"""The recipes in cluster/ match the real CLI, configs and pins.

Every YAML file parses and has the structure its tool needs. Every `distmeta ...` command
in the files (YAML strings, scripts, example lines in comments, README code) parses with the
real argument parser, and the configs it names load with its overrides. Every shell script
passes `bash -n`. Flags given to `ray start`, `ray job submit` and `mlflow server` exist in
the installed CLIs. The test reads files only: it starts no Ray.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
from commands import check_distmeta_command, commands, yaml_docs

from distmeta.cli import parse_args, split_config_and_overrides
from distmeta.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
EXPECTED = ["README.md", "ray-up.yaml", "kuberay-rayjob.yaml", "slurm.sbatch", "mlflow-server.sh", "Dockerfile"]
SCRIPTS = sorted(p for p in CLUSTER.glob("*") if p.suffix in (".sh", ".sbatch"))
YAMLS = sorted(CLUSTER.glob("*.yaml"))


def pins() -> dict[str, str]:
    """The versions distmeta is tested with (constraints.txt), e.g. {"ray": "2.60.0", "torch": ...}."""
    text = (ROOT / "constraints.txt").read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"(?m)^([\w.-]+)==([\w.]+)$", text)}


INVOCATIONS = [(p.name, argv) for p in sorted(CLUSTER.glob("*")) if p.is_file() for argv in commands(p, "distmeta")]


# --- files and YAML structure --------------------------------------------------------------

def test_cluster_folder_has_the_recipes():
    missing = [name for name in EXPECTED if not (CLUSTER / name).is_file()]
    assert not missing, f"cluster/ lacks {missing}"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_yaml_parses_to_mappings(path):
    docs = yaml_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs), f"{path.name}: expected YAML mappings"


def test_ray_up_config_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml_docs(CLUSTER / "ray-up.yaml")[0]
    assert cfg["cluster_name"] and cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert not head.get("resources", {}).get("GPU"), "the head node should have no GPUs"
    gpu_types = [t for name, t in types.items() if name != cfg["head_node_type"]
                 and t["node_config"]["InstanceType"][0] in "gp"]  # AWS GPU families: g4dn, g5, p4d ...
    assert gpu_types, "no GPU worker node type"
    assert all(0 <= t.get("min_workers", 0) <= t["max_workers"] <= cfg["max_workers"] for t in gpu_types)
    validate_config(prepare_config(cfg))  # Ray's own schema, as `ray up` checks it
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "--autoscaling-config=" in head_start
    setup = " ".join(cfg["setup_commands"])
    assert all(f"{pkg}=={pins()[pkg]}" in setup for pkg in ("torch", "torchvision")) and "distmeta @ git+" in setup


def test_rayjob_runs_distmeta_on_a_gpu_group():
    job = next(d for d in yaml_docs(CLUSTER / "kuberay-rayjob.yaml") if d.get("kind") == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert "distmeta train configs/" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == pins()["ray"], "rayVersion should be the Ray distmeta pins"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] and "nvidia.com/gpu" not in head.get("resources", {}).get("limits", {})
    gpus = 0
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus += group["replicas"] * int(limits.get("nvidia.com/gpu", 0))
    assert gpus >= 1, "no worker group with an nvidia.com/gpu limit"
    (argv,) = [a for name, a in INVOCATIONS if name == "kuberay-rayjob.yaml"]
    path, overrides = split_config_and_overrides(parse_args(argv).items)
    rt = load_config(ROOT / path, overrides).runtime
    assert rt.gpus_per_worker >= 1 and rt.workers * rt.gpus_per_worker <= gpus, \
        f"runtime.workers={rt.workers} x gpus_per_worker={rt.gpus_per_worker} does not fit {gpus} GPUs"


def test_dockerfile_uses_the_pinned_ray_and_torch_and_holds_the_configs():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(pins()['ray'])}-py3\d+-(gpu|cu\d+)$", text, re.M)
    assert all(f"{pkg}=={pins()[pkg]}" in text for pkg in ("torch", "torchvision"))
    assert re.search(r"^COPY .*\bconfigs \./configs$", text, re.M), "the image needs configs/"
    workdir = re.search(r"^WORKDIR (\S+)$", text, re.M)[1]
    job = next(d for d in yaml_docs(CLUSTER / "kuberay-rayjob.yaml") if d.get("kind") == "RayJob")
    assert job["spec"]["entrypoint"].startswith(f"cd {workdir} && distmeta train configs/")


# --- distmeta commands ---------------------------------------------------------------------

def test_commands_are_found_where_expected():
    files = {name for name, argv in INVOCATIONS if argv[:1] == ["train"]}
    assert {"kuberay-rayjob.yaml", "slurm.sbatch", "README.md", "ray-up.yaml"} <= files


@pytest.mark.parametrize(("name", "argv"), INVOCATIONS, ids=[f"{n}:{' '.join(a[:2])}" for n, a in INVOCATIONS])
def test_distmeta_command_parses_and_its_config_loads(name, argv):
    check_distmeta_command(name, argv, ROOT)


def test_every_named_config_exists():
    named = {m for p in CLUSTER.glob("*") if p.is_file() for m in re.findall(r"configs/[\w.-]+\.ya?ml", p.read_text())}
    assert named and not [c for c in named if not (ROOT / c).is_file()]


# --- scripts and the flags of other tools --------------------------------------------------

@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_bash_n(path):
    assert path.read_text().startswith("#!"), f"{path.name}: no shebang line"
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_slurm_script_starts_waits_for_and_stops_ray():
    text = (CLUSTER / "slurm.sbatch").read_text()
    for needle in ("ray start --head", "--num-cpus=", "--num-gpus=", "srun ", "--block &", "trap cleanup EXIT",
                   "ray stop", "--address \"$head_address\"", "--resume auto", "--signal=B:TERM@",
                   "runtime.time_limit_s=", "scontrol requeue", 'kill -TERM "$train_pid"'):
        assert needle in text, f"slurm.sbatch lacks {needle!r}"


def cli_options(*relative: str, package: str) -> set[str]:
    base = Path(importlib.util.find_spec(package).origin).parent
    return {o for rel in relative for o in re.findall(r"[\"'/](--[a-z][a-z0-9-]*)", (base / rel).read_text())}


def flags(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--") and a != "--"}


def test_ray_and_mlflow_flags_exist_in_the_installed_clis():
    ray_start = cli_options("scripts/scripts.py", package="ray")
    ray_submit = cli_options("dashboard/modules/job/cli.py", package="ray")
    mlflow_server = cli_options("cli/__init__.py", "utils/cli_args.py", package="mlflow")
    checked = 0
    for path in (p for p in CLUSTER.glob("*") if p.is_file()):
        for argv in commands(path, "ray"):
            if argv[:1] == ["start"]:
                unknown, checked = flags(argv) - ray_start, checked + 1
            elif argv[:2] == ["job", "submit"]:
                unknown, checked = flags(argv[:argv.index("--")] if "--" in argv else argv) - ray_submit, checked + 1
            else:
                continue
            assert not unknown, f"{path.name}: `ray {' '.join(argv[:2])}` has no {sorted(unknown)}"
    assert checked >= 5  # ray up's two, SLURM's head and workers, the README's submit
    script = (CLUSTER / "mlflow-server.sh").read_text()
    assert f"mlflow=={pins()['mlflow']}" in script
    used = set(re.findall(r"^\s+(--[a-z-]+)", script, re.M)) | set(re.findall(r"args\+=\((--[a-z-]+)", script))
    assert {"--backend-store-uri", "--artifacts-destination", "--serve-artifacts", "--host", "--workers"} <= used
    assert not used - mlflow_server, f"mlflow server has no {sorted(used - mlflow_server)}"
