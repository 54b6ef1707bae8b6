"""One driver per run directory: a lease file with a heartbeat.

``RUN_DIR/lease.json`` names its holder (host, pid, when it started) and the time of its last
heartbeat, renewed every ``HEARTBEAT_S`` by a thread of the driver. A second driver on the
same run directory (an overlapping requeue, two ``--resume auto``) is refused, naming the
holder. A lease whose holder is gone is taken over: its process is not alive (same host), or
its heartbeat is older than ``runtime.lease_timeout_s``. The lease is released when the run
ends.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from distmeta.errors import DistmetaError
from distmeta.rundir import layout
from distmeta.rundir.storage import RunDir

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0


class RunDirBusy(DistmetaError, RuntimeError):
    """Another driver holds the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def held_by(record: dict[str, Any] | None, timeout_s: float) -> str | None:
    """Who holds the lease ``record`` now, or ``None`` when nobody does (none, or its holder is gone)."""
    if not record:
        return None
    age = time.time() - float(record.get("heartbeat", 0))
    same_host = record.get("host") == socket.gethostname()
    if (same_host and not _alive(int(record.get("pid", -1)))) or age > timeout_s:
        return None
    return f"{record.get('host')} pid {record.get('pid')} (heartbeat {age:.0f} s ago)"


class Lease:
    """The run directory's lease for this driver: :meth:`acquire`, then :meth:`release`."""

    def __init__(self, rd: RunDir, timeout_s: float) -> None:
        self.rd, self.timeout_s = rd, timeout_s
        self.token = uuid.uuid4().hex
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                       "started": time.time(), "heartbeat": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        if not self.rd.exists(layout.LEASE):
            return None
        try:
            return json.loads(self.rd.read_text(layout.LEASE))
        except (ValueError, OSError):
            return None  # a torn or unreadable lease holds nothing

    def _write(self) -> None:
        self.record["heartbeat"] = time.time()
        self.rd.write_text(layout.LEASE, json.dumps(self.record))

    def acquire(self) -> Lease:
        """Take the lease, or :class:`RunDirBusy` naming its holder."""
        current = self._read()
        holder = held_by(current, self.timeout_s)
        if holder is not None and current.get("token") != self.token:  # type: ignore[union-attr]
            raise RunDirBusy(f"{self.rd.location} is in use by another driver: {holder}; stop it first, or wait "
                             f"runtime.lease_timeout_s={self.timeout_s:g} s after it died")
        if current:
            log.warning("taking over the lease of %s from %s pid %s (gone)", self.rd.location, current.get("host"),
                        current.get("pid"))
        self._write()
        if (self._read() or {}).get("token") != self.token:  # another driver wrote in between
            raise RunDirBusy(f"{self.rd.location}: another driver took the lease at the same moment")
        self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except Exception as exc:  # the store is down: the next beat tries again
                log.warning("could not renew the lease of %s: %s", self.rd.location, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if (self._read() or {}).get("token") == self.token:
                self.rd.delete(layout.LEASE)
        except Exception as exc:  # leave it: its heartbeat stops, so it expires
            log.debug("lease release: %s", exc)
