"""Bounded retries with a cool-down, so a dead tracking server never stalls or kills training."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# MLflow error codes that a retry cannot fix: the request itself is wrong.
PERMANENT_ERROR_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED",
})


# MLflow's HTTP client reads these at request time; it retries 7 times with backoff by default,
# which would hold a training step for minutes when the server is down. We retry ourselves.
_HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
_owned_env: set[str] = set()


class TrackingError(RuntimeError):
    """A tracking call that failed for good; ``permanent`` when retrying could not help."""

    def __init__(self, what: str, cause: BaseException, permanent: bool) -> None:
        super().__init__(f"MLflow call {what!r} failed: {cause}")
        self.what = what
        self.cause = cause
        self.permanent = permanent
        self.error_code: str | None = getattr(cause, "error_code", None)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one tracking call.

    Attributes:
        max_retries: retries after the first attempt.
        backoff_s: wait before the first retry; doubled before each next one.
        max_wait_s: bound on one call's attempts and waits together (a retry is not started
            when its wait would pass it), so a call returns within about
            ``max_wait_s + timeout_s``.
        timeout_s: HTTP connect/read timeout of one attempt.
        cooldown_s: after a call fails for good, background calls (``background=True``) skip
            the server for this long and fail at once, so training does not wait on it; after
            that, a background call makes one attempt (no retries) until one succeeds.
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_wait_s: float = 10.0
    timeout_s: float = 5.0
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_retries", "backoff_s", "max_wait_s", "timeout_s", "cooldown_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout_s == 0:
            raise ValueError("RetryPolicy.timeout_s must be > 0, got 0")


class Retrier:
    """Runs tracking calls under a :class:`RetryPolicy` and remembers when the server is down."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._down_until = 0.0
        self._down = False

    @property
    def cooling_down(self) -> bool:
        """Whether a recent failure still makes background calls skip the server."""
        return self._clock() < self._down_until

    def call(self, what: str, fn: Callable[[], _T], background: bool = False) -> _T:
        """Return ``fn()``, retrying transient failures within the policy's bounds.

        Raises:
            TrackingError: the call failed for good (or was skipped while cooling down).
        """
        if background and self.cooling_down:
            raise TrackingError(what, RuntimeError("server marked unavailable"), permanent=False)
        # After the cool-down, a background call is one quick probe, not a full retry round.
        max_retries = 0 if background and self._down else self.policy.max_retries
        start = self._clock()
        wait = self.policy.backoff_s
        attempt = 0
        while True:
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - any failure of the tracking backend
                if _is_permanent(exc):
                    logger.warning("MLflow %s rejected: %s", what, exc)
                    raise TrackingError(what, exc, permanent=True) from exc
                elapsed = self._clock() - start
                if attempt >= max_retries or elapsed + wait > self.policy.max_wait_s:
                    self._mark_down(what, exc, attempt + 1, elapsed)
                    raise TrackingError(what, exc, permanent=False) from exc
                logger.info("MLflow %s failed (attempt %d): %s; retrying in %.2f s",
                            what, attempt + 1, _short(exc), wait)
                time.sleep(wait)
                attempt += 1
                wait *= 2
                continue
            self._mark_up(what)
            return result

    def _mark_down(self, what: str, exc: BaseException, attempts: int, elapsed: float) -> None:
        """Record a failure for good and start the cool-down."""
        self._down_until = self._clock() + self.policy.cooldown_s
        self._down = True
        logger.warning("MLflow %s failed after %d attempt(s) in %.1f s: %s; tracking data is "
                       "kept in the spill files, training goes on", what, attempts, elapsed,
                       _short(exc))

    def _mark_up(self, what: str) -> None:
        """Record a success, ending any cool-down."""
        if self._down:
            logger.warning("MLflow reachable again (%s succeeded)", what)
        self._down = False
        self._down_until = 0.0


def configure_http(policy: RetryPolicy) -> None:
    """Make MLflow's HTTP client fail fast: no retries of its own, ``policy.timeout_s`` per
    request. Variables the user set in the environment are left as they are."""
    values = {_HTTP_ENV[0]: "0", _HTTP_ENV[1]: str(max(1, math.ceil(policy.timeout_s)))}
    for name, value in values.items():
        if name in os.environ and name not in _owned_env:
            logger.debug("%s=%s set by the user; kept", name, os.environ[name])
            continue
        os.environ[name] = value
        _owned_env.add(name)


def _is_permanent(exc: BaseException) -> bool:
    """Whether ``exc`` is an MLflow rejection of the request itself, not a transport failure."""
    return getattr(exc, "error_code", None) in PERMANENT_ERROR_CODES


def _short(exc: BaseException, limit: int = 300) -> str:
    """The first ``limit`` characters of an exception's message (MLflow's can be very long)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."
