"""Names by import path and by entry point, wherever a config takes a name; the errors name
the key, the module and the import error; a module the engine cannot run is named before
any actor starts."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest
import torch
from userpkg import forget_package, write_project

from distmeta import plugins
from distmeta.config import ConfigError, load_config
from distmeta.runtime.preflight import check


@pytest.fixture
def project(tmp_path, monkeypatch):
    forget_package()
    root = write_project(tmp_path / "project")
    monkeypatch.chdir(root)  # the working directory is importable, as under python -m
    yield root
    forget_package()


def test_every_named_thing_takes_an_import_path(project):
    cfg = load_config(project / "config.yaml", ["outer.optimizer_args={betas: [0.8, 0.9], eps: 1e-6}"])
    model, rule = cfg.model.build(), cfg.algorithm.build()
    assert type(model).__name__ == "Net" and model.head_prefix == "out."
    assert type(rule).__name__ == "DecayingMAML" and cfg.algorithm.kwargs["decay"] == 0.5  # defaults recorded
    assert rule.adapted(rule.init_params(model), model) == ("out.weight", "out.bias")
    optimizer = cfg.outer.build([torch.zeros(2, requires_grad=True)])
    assert type(optimizer) is torch.optim.AdamW and tuple(optimizer.defaults["betas"]) == (0.8, 0.9)
    assert cfg.import_paths() == ["mypkg.nets:Net", "mypkg.tasks:Lines", "mypkg.rules:DecayingMAML",
                                  "torch.optim:AdamW", "mypkg.losses:huber"]
    assert plugins.local_code(cfg.import_paths()) == [str(project / "mypkg")]  # torch is installed: not shipped


def test_the_family_s_own_loss_is_used(project):
    from distmeta.losses import task_loss

    cfg = load_config(project / "config.yaml")
    batch = plugins.build("task", cfg.task.family, cfg.task.kwargs).sample(1, 0, 0, 0)
    assert batch.loss == "mypkg.losses:huber"
    pred = torch.zeros_like(batch.query_y[0])
    loss, acc = task_loss(batch.loss, pred, batch.query_y[0])
    assert torch.equal(loss, torch.nn.functional.huber_loss(pred, batch.query_y[0])) and float(acc) == 0.0


@pytest.mark.parametrize(("override", "message"), [
    ("model.name=nopkg.nets:Net", r"model.name='nopkg.nets:Net': cannot import nopkg.nets \(ModuleNotFoundError"),
    ("model.name=mypkg.nets:Nope", r"model.name='mypkg.nets:Nope': module mypkg.nets has no attribute Nope"),
    ("algorithm.name=mypkg.rules", r"algorithm.name='mypkg.rules': expected one of \[.*\] or an import path"),
    ("task.family=mypkg.broken:Lines", r"task.family='mypkg.broken:Lines': cannot import mypkg.broken \(SyntaxError"),
    ("outer.optimizer=torch.optim:Adamm", r"outer.optimizer='torch.optim:Adamm': module torch.optim has no attribute"),
    ("model.hiden=3", r"model.hiden: unknown key; valid keys: \['hidden'\]"),
])
def test_a_name_that_does_not_resolve_is_one_line_naming_the_key(project, override, message):
    (project / "mypkg" / "broken.py").write_text("def oops(:\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(project / "config.yaml", [override])
    assert "\n" not in str(info.value)


def test_installed_packages_register_names_by_entry_point(project, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "userplugins-1.0.dist-info").mkdir(parents=True)
    (site / "userplugins-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: userplugins\nVersion: 1.0\n")
    (site / "userplugins-1.0.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""
        [distmeta.plugins]
        model.lines_net = mypkg.nets:Net
        algorithm.decaying = mypkg.rules:DecayingMAML
        model.gone = mypkg.nets:Missing
        """))
    monkeypatch.syspath_prepend(str(site))
    plugins._entry_points.cache_clear()
    importlib.invalidate_caches()
    try:
        assert "lines_net" in plugins.names("model") and "decaying" in plugins.names("algorithm")
        cfg = load_config(project / "config.yaml", ["model.name=lines_net", "algorithm.name=decaying"])
        assert type(cfg.model.build()).__name__ == "Net"
        with pytest.raises(ConfigError, match=r"model.name='gone': the entry point distmeta.plugins model.gone = "
                                              r"mypkg.nets:Missing does not load \(AttributeError"):
            load_config(project / "config.yaml", ["model.name=gone"])
        with pytest.raises(ConfigError, match=r"model.name='lines_nett': expected one of \[.*'lines_net'"):
            load_config(project / "config.yaml", ["model.name=lines_nett"])
    finally:
        plugins._entry_points.cache_clear()


@pytest.mark.parametrize(("model", "message"), [
    ("Counting", r"model.name=mypkg.nets:Counting: its forward changes the buffer\(s\) \['calls'\] in place"),
    ("Eager", r"model.name=mypkg.nets:Eager with algorithm.name=mypkg.rules:DecayingMAML does not run on distmeta's "
              r"engine .*algorithm.vectorize=false runs one task at a time"),
])
def test_a_module_the_engine_cannot_run_is_named_before_any_actor_starts(project, model, message):
    cfg = load_config(project / "config.yaml", [f"model.name=mypkg.nets:{model}", "model.hidden=null"])
    with pytest.raises(ConfigError, match=message):
        check(cfg)
    check(load_config(project / "config.yaml"))  # the ordinary module runs


def test_given_objects_are_used_as_they_are_and_named_for_what_they_were(project):
    from mypkg.nets import Net

    plugins.forget()
    try:
        name = plugins.give("model", Net(hidden=3))
        cfg = load_config(None, [f"model.name={name}", "model.head=out"])
        built = cfg.model.build()
        assert type(built).__name__ == "Net" and built.features[0].out_features == 3
        with pytest.raises(ConfigError, match="given as an object; it takes no keys"):
            load_config(None, [f"model.name={name}", "model.hidden=4"])
    finally:
        plugins.forget()
    with pytest.raises(ConfigError, match="was an object handed to distmeta.fit in the run that wrote this config"):
        load_config(None, ["model.name=given-model"])
