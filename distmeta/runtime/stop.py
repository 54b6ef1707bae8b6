"""A clean stop on SIGTERM or SIGINT (pre-emption, ``scancel``, a time limit, ``ray job stop``).

The first signal asks the step loop to stop: it dispatches nothing new, lets the step in
flight finish, checkpoints at the server's step and ends the tracked run as KILLED. If that
step has not finished within ``runtime.stop_grace_s`` (or a second signal arrives), the step
is abandoned: :class:`StepAbandoned` is raised in the main thread, out of whatever blocking
Ray call it is in. The server applies a step atomically, so an abandoned step is either fully
applied or not at all, and the checkpoint written next is consistent either way.
"""

from __future__ import annotations

import _thread
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int | None) -> int:
    """The shell's convention: 0 for a run that ended as asked, 128 + the number of the signal
    that stopped it."""
    return 128 + signum if signum else 0


class StepAbandoned(BaseException):
    """The step in flight is given up after a stop request (not an ``Exception``: nothing on
    the way up may swallow it)."""


class StopRequest:
    """Installs SIGTERM/SIGINT handlers for the duration of a ``with`` block (main thread only)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._expired = False
        self.phase = "loop"

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def disarm(self) -> None:
        """The step loop has stopped and the final checkpoint is being written: from now on a
        signal is noted (for the exit code) but abandons nothing, however many arrive, so the
        checkpoint completes (or the previous one stands)."""
        if self._timer is not None:
            self._timer.cancel()
        self.phase = "finishing"

    def evaluating(self) -> None:
        """The final evaluation runs after the checkpoint: a signal now stops it at once."""
        self.phase = "evaluating"

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.phase == "finishing":
            self.signum = self.signum or signum
            log.warning("received %s while writing the final checkpoint: it completes first", signal.Signals(signum).name)
            return
        if self.phase == "evaluating":
            self.signum = self.signum or signum
            raise StepAbandoned(f"{signal.Signals(signum).name} during the final evaluation (the checkpoint is written)")
        if self.signum is None:
            self.signum = signum
            log.warning("received %s: finishing the step in flight (at most runtime.stop_grace_s=%g s), "
                        "then checkpointing and stopping", signal.Signals(signum).name, self.grace_s)
            self._timer = threading.Timer(self.grace_s, self._expire)
            self._timer.daemon = True
            self._timer.start()
            return
        reason = "runtime.stop_grace_s ran out" if self._expired else f"second {signal.Signals(signum).name}"
        raise StepAbandoned(reason)

    def _expire(self) -> None:
        if self.phase != "loop":
            return
        self._expired = True
        _thread.interrupt_main(signal.SIGINT)


class StopPolicy:
    """When the step loop stops submitting steps: at ``target`` (``outer.steps``, or an earlier
    ``until_step``), at a SIGTERM/SIGINT (:class:`StopRequest`), or after the step that
    crosses ``runtime.time_limit_s`` of loop time. The steps in flight are collected either way."""

    def __init__(self, target: int, time_limit_s: float | None, grace_s: float) -> None:
        self.target, self.time_limit_s = target, time_limit_s
        self.signals = StopRequest(grace_s)
        self.loop_start = time.perf_counter()
        self.timed_out = False

    def __enter__(self) -> StopPolicy:
        self.signals.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.signals.__exit__(*exc)

    def start_loop(self) -> None:
        self.loop_start = time.perf_counter()

    @property
    def ending(self) -> bool:
        """A signal came or the time limit passed: submit nothing more."""
        return self.signals.requested or self.timed_out

    def may_submit(self, step: int) -> bool:
        return not self.ending and step < self.target

    def is_last(self, done: int) -> bool:
        """Whether the step just collected (``done`` steps complete) is the loop's last."""
        return done >= self.target or self.ending

    def check_time(self, done: int, total: int) -> None:
        """After a collected step: stop submitting once the time limit has passed."""
        limit = self.time_limit_s
        if limit is None or self.timed_out or done >= self.target:
            return
        if time.perf_counter() - self.loop_start >= limit:
            log.info("runtime.time_limit_s=%g reached after %d of %d steps", limit, done, total)
            self.timed_out = True
