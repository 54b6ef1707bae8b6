"""A real ``mlflow server`` on 127.0.0.1 for tests: own process group, SQLite store, free port."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

logger = logging.getLogger(__name__)


class MlflowServer:
    """One ``mlflow server`` on 127.0.0.1 with an SQLite store, restartable on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, deadline_s: float = 60.0) -> None:
        """Start the server and wait for ``/health`` (fail with the log tail on timeout)."""
        cmd = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
               "--default-artifact-root", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        # No background job runner (7 huey processes) on a 2-core test machine.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.root, start_new_session=True)
        self.starts += 1
        begin = time.monotonic()
        while time.monotonic() - begin < deadline_s:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as resp:
                    if resp.status == 200:
                        logger.info("mlflow server up in %.1f s", time.monotonic() - begin)
                        return
            except OSError:
                time.sleep(0.25)
        tail = (self.root / "server.log").read_text(errors="replace")[-3000:]
        self.stop()
        pytest.fail(f"mlflow server on port {self.port} not healthy in {deadline_s} s:\n{tail}")

    def stop(self) -> None:
        """Kill the server's whole process group and wait until it is gone."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        self.proc = None
