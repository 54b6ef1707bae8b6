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
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


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

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (self.signum or 0)

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
        """The step loop has stopped: no more abandoning on time (a second signal still does)."""
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
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
        self._expired = True
        _thread.interrupt_main(signal.SIGINT)
