"""The tracker's spill files for a run directory on a URI (s3://, gs://, file://).

The tracker spills to a local staging folder; :class:`SpillMirror` keeps ``RUN_DIR/tracking``
on the store in step with it, so a resumed run (on any machine) re-sends what an earlier
attempt could not. Object stores cannot append, and the metrics spill grows at every logged
step while the tracking server is down: what it gained since the last sync is uploaded as
the next part (``unsent_metrics.jsonl.part-000001`` ...), so a sync costs the bytes that are
new, not the whole file. When the file was rewritten (lines were sent) it is uploaded whole
and the parts removed; the parts are also folded in once they are many.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from distmeta.rundir import layout
from distmeta.rundir.storage import RunDir, private_folder

log = logging.getLogger(__name__)
MAX_PARTS = 64
"""Parts kept beside a spill file before the next sync uploads it whole."""


class SpillMirror:
    """``RUN_DIR/tracking`` on the store, mirrored by the local staging folder ``local``."""

    def __init__(self, rd: RunDir, local: Path) -> None:
        self.rd, self.local = rd, local
        self.uploaded: dict[str, tuple[int, int] | None] = {}  # (inode, bytes) of what the store holds
        self.parts: dict[str, int] = {}
        self.synced = True
        private_folder(local)
        for name in layout.SPILLED:
            self._fetch(name)

    def _remote(self, name: str) -> str:
        return f"{layout.SPILL}/{name}"

    def _remote_parts(self, name: str) -> list[str]:
        prefix = f"{name}.part-"
        return sorted(f for f in self.rd.list(layout.SPILL) if f.startswith(prefix))

    def _fetch(self, name: str) -> None:
        """Rebuild the local file from the store's file and its parts, in order."""
        pieces = ([name] if self.rd.exists(self._remote(name)) else []) + self._remote_parts(name)
        if pieces:
            data = b"".join(self.rd.read_bytes(f"{layout.SPILL}/{p}") for p in pieces)
            (self.local / name).write_bytes(data)
            log.info("re-sending %s from %s", name, self.rd.uri(layout.SPILL))
        self.parts[name] = len(pieces) - (1 if pieces and pieces[0] == name else 0)
        self.uploaded[name] = self._stamp(name)

    def _stamp(self, name: str) -> tuple[int, int] | None:
        """(inode, size): the tracker appends in place and rewrites by renaming a new file."""
        path = self.local / name
        if not path.exists():
            return None
        st = path.stat()
        return st.st_ino, st.st_size

    def sync(self) -> None:
        """Upload what changed since the last sync (raises what the store raises)."""
        self.synced = False
        for name in layout.SPILLED:
            now, before = self._stamp(name), self.uploaded.get(name)
            if now == before:
                continue
            if now is None:
                self._replace(name, None)
            elif before is not None and now[0] == before[0] and now[1] > before[1] and self.parts[name] < MAX_PARTS:
                self._append(name, before[1])
            else:
                self._replace(name, (self.local / name).read_bytes())
            self.uploaded[name] = now
        self.synced = True

    def _append(self, name: str, start: int) -> None:
        """The spill only grew (the tracker appends): upload the new bytes as the next part."""
        with (self.local / name).open("rb") as fh:
            fh.seek(start)
            new = fh.read()
        self.parts[name] += 1
        self.rd.write_bytes(f"{layout.SPILL}/{name}.part-{self.parts[name]:06d}", new)

    def _replace(self, name: str, data: bytes | None) -> None:
        """The whole file (or its removal), then its parts removed."""
        if data is not None:
            self.rd.write_bytes(self._remote(name), data)
        elif self.rd.exists(self._remote(name)):
            self.rd.delete(self._remote(name))
        for part in self._remote_parts(name):
            self.rd.delete(f"{layout.SPILL}/{part}")
        self.parts[name] = 0

    def remove_staging(self) -> None:
        """Remove the local staging folder once the store holds all it held and no artifact
        staged there waits to be sent (it is named by path in the spilled params)."""
        if not self.synced:
            why = f"{self.rd.uri(layout.SPILL)} could not be written"
        elif self._artifacts_unsent():
            why = "it holds artifacts not sent yet"
        else:
            shutil.rmtree(self.local, ignore_errors=True)
            return
        log.warning("kept the tracking staging folder %s: %s", self.local, why)

    def _artifacts_unsent(self) -> bool:
        path = self.local / layout.SPILLED_PARAMS
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            return True
        return any(isinstance(e, dict) and e.get("artifacts") for e in data.values())
