"""flatten_params, key validation and log_batch chunking against MLflow's limits."""

from __future__ import annotations

import logging
import re

import pytest

from distmeta.tracking import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
    batches,
    flatten_params,
    validate_key,
)


def test_limits_match_installed_mlflow() -> None:
    from mlflow.utils import validation

    assert validation.MAX_PARAMS_TAGS_PER_BATCH == MAX_PARAMS_TAGS_PER_BATCH == 100
    assert validation.MAX_METRICS_PER_BATCH == MAX_METRICS_PER_BATCH == 1000
    assert validation.MAX_ENTITIES_PER_BATCH == MAX_ENTITIES_PER_BATCH == 1000
    assert validation.MAX_PARAM_VAL_LENGTH == MAX_PARAM_VAL_LENGTH == 6000
    assert validation.MAX_TAG_VAL_LENGTH == MAX_TAG_VAL_LENGTH == 8000


class _Model:
    """Stands in for a pydantic model: anything with model_dump() is flattened."""

    def model_dump(self) -> dict:
        return {"width": 40, "depth": 2}


def test_flatten_nested_config() -> None:
    nested = {
        "algorithm": {"name": "maml", "inner_lr": 0.4, "inner_steps": 1, "adapt": ["head.w"]},
        "model": _Model(),
        "data": {"shards": {}, "path": None},
        "seed": 0,
        "clip": True,
    }
    assert flatten_params(nested) == {
        "algorithm.name": "maml",
        "algorithm.inner_lr": "0.4",
        "algorithm.inner_steps": "1",
        "algorithm.adapt": '["head.w"]',
        "model.width": "40",
        "model.depth": "2",
        "data.shards": "{}",
        "data.path": "None",
        "seed": "0",
        "clip": "True",
    }


def test_flatten_truncates_long_values_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="distmeta.tracking"):
        flat = flatten_params({"notes": {"text": "x" * 7000}, "ok": "y" * 6000})
    assert flat["notes.text"] == "x" * MAX_PARAM_VAL_LENGTH
    assert flat["ok"] == "y" * 6000
    assert "'notes.text'" in caplog.text and "7000" in caplog.text


@pytest.mark.parametrize(
    ("nested", "error", "named"),
    [
        ({"a": {"b[0]": 1}}, ValueError, "a.b[0]"),
        ({"k" * 251: 1}, ValueError, "251 characters"),
        ({"a//b": 1}, ValueError, "'a//b'"),
        ({".": {"x": 1}}, ValueError, "'..x'"),
        ({"/abs": 1}, ValueError, "/abs"),
        ({"a": {3: 1}}, TypeError, "3"),
    ],
)
def test_flatten_rejects_bad_keys(nested: dict, error: type, named: str) -> None:
    with pytest.raises(error, match=re.escape(named)):
        flatten_params(nested)


def test_flatten_rejects_non_mapping() -> None:
    with pytest.raises(TypeError, match="list"):
        flatten_params([("a", 1)])  # type: ignore[arg-type]


def test_validate_key_accepts_mlflow_names() -> None:
    for key in ("train/query_loss", "eval:5way 1shot", "a.b-c_d"):
        assert validate_key(key, "metric") == key
    with pytest.raises(ValueError, match="metric key 'a//b'"):
        validate_key("a//b", "metric")


def test_batches_respect_log_batch_limits() -> None:
    params = [f"p{i}" for i in range(250)]
    tags = [f"t{i}" for i in range(30)]
    metrics = [f"m{i}" for i in range(2500)]
    out = list(batches(metrics=metrics, params=params, tags=tags))
    for m, p, t in out:
        assert len(p) + len(t) <= MAX_PARAMS_TAGS_PER_BATCH
        assert len(m) <= MAX_METRICS_PER_BATCH
        assert len(m) + len(p) + len(t) <= MAX_ENTITIES_PER_BATCH
    assert [len(m) for m, _, _ in out] == [0, 0, 0, 1000, 1000, 500]
    assert [len(p) + len(t) for _, p, t in out] == [100, 100, 80, 0, 0, 0]
    assert [x for _, p, _ in out for x in p] == params  # order kept, nothing lost
    assert [x for _, _, t in out for x in t] == tags
    assert [x for m, _, _ in out for x in m] == metrics


def test_batches_of_nothing_is_empty() -> None:
    assert list(batches()) == []
