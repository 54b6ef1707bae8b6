"""Flattening, validation and batching of params, tags and metrics within MLflow's limits.

The limits below are MLflow 3's REST limits for ``log_batch`` (``mlflow.utils.validation``);
``tests/unit/test_tracking_params.py`` checks they still match the installed MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from distmeta.uri import redact

logger = logging.getLogger(__name__)

MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250

_KEY_PATTERN = re.compile(r"^[/\w.\- :]*$")
_T = TypeVar("_T")


def validate_key(key: str, kind: str = "param") -> str:
    """Return ``key`` if MLflow accepts it as a ``kind`` name, else raise ``ValueError``.

    MLflow names may contain alphanumerics, ``_ - . / :`` and spaces, be at most 250 characters,
    and must not change under path normalisation (no ``a//b``, ``./a``, ``../a``, ``/a``).
    """
    if not isinstance(key, str):
        raise TypeError(f"{kind} key {key!r} must be a str, not {type(key).__name__}")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"{kind} key {key[:60]!r}... is {len(key)} characters; MLflow allows {MAX_KEY_LENGTH}"
        )
    if not _KEY_PATTERN.match(key):
        raise ValueError(
            f"{kind} key {key!r} has characters MLflow rejects; use letters, digits, "
            "'_', '-', '.', '/', ':' and spaces"
        )
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        raise ValueError(f"{kind} key {key!r} is not a normalised path (it reads as {norm!r})")
    return key


def _format_value(value: Any) -> str:
    """Render one param value as text: lists/tuples as JSON, everything else with ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str)
    return str(value)


def truncate(key: str, value: str, limit: int, kind: str = "param") -> str:
    """Cut ``value`` to ``limit`` characters, warning with the key's name when it does."""
    if len(value) <= limit:
        return value
    logger.warning("%s %r value has %d characters; truncated to MLflow's limit of %d",
                   kind, key, len(value), limit)
    return value[:limit]


def flatten_params(nested: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Flatten a nested mapping into ``{"algorithm.inner_lr": "0.4", ...}`` for MLflow.

    Nested mappings (and objects with ``model_dump``, i.e. pydantic models) become dotted keys;
    lists and tuples become JSON text; other values use ``str``. Empty mappings are kept as
    ``"{}"`` so the key is not lost. Values are truncated to ``MAX_PARAM_VAL_LENGTH``, and
    credentials in them redacted (:func:`distmeta.uri.redact`).

    Raises:
        TypeError: ``nested`` is not a mapping, or a key is not a string.
        ValueError: a flattened key is one MLflow would reject (named in the message).
    """
    if hasattr(nested, "model_dump"):
        nested = nested.model_dump()
    if not isinstance(nested, Mapping):
        raise TypeError(f"params must be a mapping, got {type(nested).__name__}")
    flat: dict[str, str] = {}
    for raw_key, value in nested.items():
        if not isinstance(raw_key, str):
            raise TypeError(f"param key {raw_key!r} under {prefix or '<root>'!r} must be a str")
        key = f"{prefix}{sep}{raw_key}" if prefix else raw_key
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, key, sep))
            continue
        text = "{}" if isinstance(value, Mapping) else redact(_format_value(value))
        flat[validate_key(key)] = truncate(key, text, MAX_PARAM_VAL_LENGTH)
    return flat


def to_float(key: str, value: Any, step: int) -> float:
    """Convert a metric value (float, int, numpy or 0-d torch scalar) to ``float``.

    Raises:
        TypeError: the value cannot be read as one number; the message names key and step.
    """
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metric {key!r} at step {step} is not a number: {value!r}") from exc
    if not math.isfinite(number):
        logger.debug("metric %r at step %d is %s", key, step, number)
    return number


def chunked(items: Sequence[_T], size: int) -> Iterator[list[_T]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def batches(
    metrics: Sequence[_T] = (), params: Sequence[_T] = (), tags: Sequence[_T] = ()
) -> Iterator[tuple[list[_T], list[_T], list[_T]]]:
    """Split entities into ``(metrics, params, tags)`` batches that each pass ``log_batch``.

    Each batch has at most 100 params and tags together, 1000 metrics, 1000 entities in all.
    Params and tags go first, so a run shows its config before its first metrics.
    """
    pairs = [("p", p) for p in params] + [("t", t) for t in tags]
    for chunk in chunked(pairs, MAX_PARAMS_TAGS_PER_BATCH):
        yield [], [e for k, e in chunk if k == "p"], [e for k, e in chunk if k == "t"]
    per_batch = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH)
    for chunk in chunked(metrics, per_batch):
        yield chunk, [], []
