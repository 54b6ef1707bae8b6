"""Where a run starts: new, continued, or auto-resumed (no Ray)."""

import pytest

from distmeta.config import load_config, parse_yaml
from distmeta.errors import ConfigError
from distmeta.rundir.resume import open_run
from distmeta.rundir.storage import RunDir


def cfg(*overrides):
    return load_config("configs/sinusoid_maml.yaml", list(overrides))


def test_auto_starts_in_an_empty_run_dir_then_continues_the_same_config(tmp_path):
    run = str(tmp_path / "run")
    first, rd = open_run(cfg(), run, "auto")
    assert rd.exists("config.yaml") and first.run_dir == rd.location
    again, rd2 = open_run(cfg(), run, "auto")
    assert rd2.location == rd.location and again.to_dict() == first.to_dict()


def test_auto_refuses_a_different_experiment_naming_the_keys(tmp_path):
    run = str(tmp_path / "run")
    open_run(cfg(), run, "auto")
    with pytest.raises(ConfigError) as err:
        open_run(cfg("outer.lr=0.01", "algorithm.inner_lr=1e-3"), run, "auto")
    message = str(err.value)
    assert "keys that differ: algorithm.inner_lr, outer.lr" in message and rd_name(run) in message


def rd_name(run):
    return RunDir(run).location


def test_auto_accepts_and_records_keys_that_only_say_how_to_run(tmp_path):
    run = str(tmp_path / "run")
    open_run(cfg(), run, "auto")
    resumed, rd = open_run(cfg("runtime.workers=1", "runtime.time_limit_s=3600", "tracking.enabled=false"), run, "auto")
    saved = parse_yaml(rd.read_text("config.yaml"))
    assert saved["runtime"]["workers"] == 1 and saved["runtime"]["time_limit_s"] == 3600.0
    assert saved["tracking"]["enabled"] is False and resumed.runtime.workers == 1


def test_overrides_given_with_an_explicit_resume_are_recorded(tmp_path):
    _, rd = open_run(cfg(), str(tmp_path / "run"), None)
    resumed, _ = open_run(None, None, rd.location, ["outer.steps=5000"])
    assert resumed.outer.steps == 5000
    assert parse_yaml(rd.read_text("config.yaml"))["outer"]["steps"] == 5000


def test_a_new_run_refuses_a_taken_run_dir_and_auto_needs_a_run_dir(tmp_path):
    open_run(cfg(), str(tmp_path / "run"), None)
    with pytest.raises(FileExistsError, match="--resume auto"):
        open_run(cfg(), str(tmp_path / "run"), None)
    with pytest.raises(ConfigError, match="--resume auto needs --run-dir"):
        open_run(cfg(), None, "auto")


def test_credentials_are_redacted_in_the_run_config_and_a_resume_still_matches(tmp_path):
    run = str(tmp_path / "run")
    uri = "http://alice:pa55word@tracking.example:5000"
    first, rd = open_run(cfg(f"tracking.uri={uri}"), run, "auto")
    text = rd.read_text("config.yaml")
    assert "pa55word" not in text and "alice" not in text and "http://***@tracking.example:5000" in text
    assert first.tracking.uri == uri  # the run itself keeps what it was given
    again, _ = open_run(cfg(f"tracking.uri={uri}"), run, "auto")
    assert again.tracking.uri == uri and rd.read_text("config.yaml") == text


def test_a_resume_of_a_data_path_whose_credentials_were_redacted_names_the_key(tmp_path):
    path = "s3://KEY:SECRETKEY@bucket/omniglot"
    _, rd = open_run(cfg(f"data.path={path}"), str(tmp_path / "run"), None)
    assert "SECRETKEY" not in rd.read_text("config.yaml")
    with pytest.raises(ConfigError, match=r"data.path holds credentials.*data.path=\.\.\."):
        open_run(None, None, rd.location)
    resumed, _ = open_run(None, None, rd.location, [f"data.path={path}"])
    assert resumed.data.path == path and "SECRETKEY" not in rd.read_text("config.yaml")


@pytest.mark.parametrize(("text", "kept", "gone"), [
    ("http://bob:hunter22@host:5000/x", "http://***@host:5000/x", "hunter22"),
    ("s3://AKIA:wJalrXUt@bucket/key", "s3://AKIA:***@bucket/key", "wJalrXUt"),
    ("https://h/a.tar?X-Amz-Signature=abcdef123&x=1", "X-Amz-Signature=***&x=1", "abcdef123"),
    ("request failed with token=ghp_0123456789 at host", "token=***", "ghp_0123456789"),
    ("gs://bucket/plain/path", "gs://bucket/plain/path", None),
])
def test_redact_removes_passwords_tokens_and_signatures(text, kept, gone):
    from distmeta.uri import redact, split_credentials

    out = redact(text)
    assert kept in out and (gone is None or gone not in out)
    assert split_credentials("http://bob:hunter22@host:5000/x") == ("http://host:5000/x", "bob", "hunter22")
    assert split_credentials("http://***@host:5000") == ("http://host:5000", None, None)
