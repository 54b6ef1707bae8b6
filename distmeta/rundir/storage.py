"""A run directory on any filesystem ``pyarrow.fs`` knows: a local path, s3://, gs://, hdfs://.

Writes are atomic: the bytes go to a temporary name first and are renamed into place, so a
reader never sees half a file (on object stores the upload itself is all-or-nothing).
"""

from __future__ import annotations

import contextlib
import os
import uuid

from pyarrow import fs as pafs

from distmeta.errors import ConfigError, NotFound
from distmeta.uri import absolute, filesystem, is_uri

__all__ = ["RunDir", "is_uri", "private", "private_folder"]


FILE_MODE = 0o600
"""Run files are readable by their owner only (they can hold tokens and data paths)."""
DIR_MODE = 0o700


def private_folder(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """Create the local folder ``path`` (if missing) readable by its owner only."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    return path


def private(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """Make the local file ``path`` readable by its owner only; return it."""
    os.chmod(path, FILE_MODE)
    return path


def _write_synced(tmp: str, final: str, data: bytes, mode: int) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    folder = os.open(os.path.dirname(final) or ".", os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 28]):]


class RunDir:
    """Files of one run under ``location`` (local path or filesystem URI)."""

    mode = FILE_MODE

    def __init__(self, location: str) -> None:
        if not location:
            raise ConfigError("run_dir: empty location")
        self.location = absolute(location).rstrip("/") or "/"
        try:
            self.fs, self.root = filesystem(self.location)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes
            raise ConfigError(f"run_dir={location!r}: not a usable filesystem location ({exc})") from None

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def uri(self, name: str = "") -> str:
        return f"{self.location}/{name}" if name else self.location

    def makedirs(self, name: str = "") -> None:
        """Create the folder (a local one readable by its owner only)."""
        if self.local:
            private_folder(self.path(name))
            return
        self.fs.create_dir(self.path(name), recursive=True)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write atomically: a temporary file, then a rename; on local storage the file and its
        folder are fsynced (a crash leaves the old file or the new one, whole). A failed write
        leaves no temporary file behind."""
        parent = os.path.dirname(name)
        self.makedirs(parent)
        tmp = self.path(f"{parent}/.tmp-{uuid.uuid4().hex}" if parent else f".tmp-{uuid.uuid4().hex}")
        try:
            if self.local:
                _write_synced(tmp, self.path(name), data, self.mode)
                return
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, self.path(name))
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.delete_file(tmp)
            raise

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def read_bytes(self, name: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(name)) as stream:
                return stream.readall()
        except FileNotFoundError:
            raise NotFound(f"{self.uri(name)} does not exist") from None

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def list(self, folder: str) -> list[str]:
        """Names (relative to ``folder``) of the files in ``folder``; empty when it does not
        exist or is not a folder."""
        if self.fs.get_file_info(self.path(folder)).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(folder), recursive=False))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)

    def delete(self, name: str) -> None:
        self.fs.delete_file(self.path(name))
