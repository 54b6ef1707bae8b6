"""The command line: config errors are one clear line and a non-zero exit, no traceback."""

import subprocess
import sys

import pytest

CONFIG = "configs/sinusoid_maml.yaml"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "distmeta.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    ((CONFIG, "algorithm.inner_lrr=0.1"), "algorithm.inner_lrr: unknown key"),
    ((CONFIG, "outer.lr=abc"), "outer.lr"),
    ((CONFIG, "algorithm.inner_steps=0"), "algorithm.inner_steps=0"),
    ((CONFIG, "algorithm.name=mammal"), "algorithm.name='mammal'"),
    (("missing.yaml",), "config file 'missing.yaml' does not exist"),
    ((CONFIG, "runtime.workers=9"), "runtime.workers=9 must be <= runtime.logical_shards"),
    ((CONFIG, "nonsense"), "expected key=value"),
])
def test_config_errors_are_one_line_without_traceback(args, needle, capsys):
    from distmeta.cli import main

    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_a_config_error_from_the_installed_command_has_no_traceback():
    proc = run("train", CONFIG, "algorithm.inner_lrr=0.1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("distmeta: error: algorithm.inner_lrr: unknown key; valid keys: "
                                   "['adapt', 'bn_per_step', 'checkpoint_inner', 'chunk_size', 'first_order_steps', 'inner_lr', "
                                   "'inner_steps', 'lslr', 'msl_steps', 'vectorize']")
    assert "Traceback" not in proc.stdout


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    proc = run("train", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "no config.yaml" in proc.stderr


def test_every_config_in_configs_is_valid():
    from pathlib import Path

    from distmeta.config import load_config

    configs = sorted(Path("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


NUMBER_KEYS = ["task.noise", "algorithm.inner_lr", "outer.lr", "outer.weight_decay", "outer.clip_grad_norm",
               "runtime.cpus_per_worker", "runtime.time_limit_s", "runtime.stop_grace_s"]


@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_1e_minus_3_is_a_number_in_every_section(key, tmp_path):
    """YAML 1.1 reads 1e-3 as a string; every section must see the number, from an override
    and from a file written by hand."""
    from distmeta.config import load_config

    section, name = key.split(".")
    base = "model:\n  name: linear_rep\n  d: 20\n  k: 3\n" if section == "task" else ""
    family = "  family: linear_rep\n" if section == "task" else ""
    path, base_path = tmp_path / "c.yaml", tmp_path / "base.yaml"
    path.write_text(base + f"{section}:\n{family}  {name}: 1e-3\n")
    base_path.write_text(base + (f"task:\n{family}" if family else ""))
    for cfg in (load_config(base_path, [f"{key}=1e-3"]), load_config(path)):
        part = getattr(cfg, section)
        value = part.kwargs[name] if section in ("task", "algorithm") else getattr(part, name)
        assert value == 0.001 and isinstance(value, float), (key, value)


def test_the_rule_gets_a_float_inner_lr():
    from distmeta.config import load_config

    rule = load_config(None, ["algorithm.inner_lr=1e-3"]).algorithm.build()
    assert rule.inner_lr == 0.001 and isinstance(rule.inner_lr, float)


def test_overrides_may_follow_options_and_verbose_may_follow_the_command(tmp_path):
    from distmeta.cli import parse_args

    args = parse_args(["train", CONFIG, "--run-dir", str(tmp_path), "outer.steps=3", "--no-eval", "outer.lr=1e-3", "-v"])
    assert args.items == [CONFIG, "outer.steps=3", "outer.lr=1e-3"] and args.verbose and args.run_dir == str(tmp_path)
    assert parse_args(["-v", "config", CONFIG]).verbose


def test_config_prints_the_resolved_config(capsys):
    from distmeta.cli import main
    from distmeta.config import parse_yaml

    assert main(["config", CONFIG, "algorithm.inner_lr=1e-3", "runtime.workers=1"]) == 0
    printed = parse_yaml(capsys.readouterr().out)
    assert printed["algorithm"]["inner_lr"] == 0.001 and printed["runtime"]["workers"] == 1
    assert printed["runtime"]["stop_grace_s"] == 20.0  # defaults filled in
    assert printed["algorithm"]["adapt"] == "all"


def test_help_lists_every_key_with_its_default():
    proc = run("config", "--help")
    assert proc.returncode == 0
    for line in ("outer.lr: float = 0.001", "runtime.stop_grace_s: float = 20.0", "name: maml: inner_lr=0.01",
                 "family: sinusoid: shots=10"):
        assert line in proc.stdout
    assert "runtime.server_timeout_s" in run("train", "--help").stdout


def test_top_level_help_does_not_import_torch():
    code = ("import sys\nfrom distmeta.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'ray' in sys.modules, 'mlflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False False False"


def test_a_null_override_drops_a_key_the_new_class_does_not_take(capsys):
    from distmeta.cli import main

    assert main(["config", "configs/omniglot_5w1s_maml.yaml", "model.name=resnet12", "model.pool=null"]) == 0
    out = capsys.readouterr().out
    assert "name: resnet12" in out and "pool" not in out
