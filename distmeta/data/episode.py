"""One episode as stored in a shard: four ``.npy`` arrays and a ``meta.json``, no pickle.

A webdataset sample with key ``00000012`` holds the tar members ``00000012.support_x.npy``,
``00000012.support_y.npy``, ``00000012.query_x.npy``, ``00000012.query_y.npy`` and
``00000012.meta.json``. Inputs may be stored as ``uint8`` (value * 255, lossless for 8-bit
image sources, 4x smaller); readers turn them back into ``float32`` in [0, 1].
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from distmeta.data.errors import ShardError
from distmeta.types import EpisodeBatch

ARRAYS = ("support_x", "support_y", "query_x", "query_y")
MEMBERS = tuple(f"{name}.npy" for name in ARRAYS) + ("meta.json",)
X_DTYPES = ("float32", "uint8")
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(frozen=True)
class EpisodeRecord:
    """The arrays of one episode (no task dimension) and its metadata.

    Arrays read from a shard are read-only views of the file's bytes; copy to modify.
    """

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}

    def shapes(self) -> dict[str, dict[str, Any]]:
        """``{name: {"shape": [...], "dtype": "<f4"}}``: what the manifest records."""
        return {n: {"shape": list(a.shape), "dtype": a.dtype.str} for n, a in self.arrays().items()}


def store_inputs(record: EpisodeRecord, x_dtype: str) -> EpisodeRecord:
    """``record`` with inputs cast for storage: ``uint8`` keeps ``round(x * 255)``."""
    if x_dtype not in X_DTYPES:
        raise ValueError(f"x_dtype={x_dtype!r}: expected one of {X_DTYPES}")
    if x_dtype == "float32":
        return record

    def quantise(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    return EpisodeRecord(quantise(record.support_x), record.support_y,
                         quantise(record.query_x), record.query_y, record.meta)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in ``.npy`` format, refusing object arrays (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_episode(record: EpisodeRecord, key: str) -> dict[str, Any]:
    """The webdataset sample (``__key__`` plus member bytes) of one episode."""
    sample: dict[str, Any] = {"__key__": key}
    for name, array in record.arrays().items():
        sample[f"{name}.npy"] = npy_bytes(array)
    sample["meta.json"] = json.dumps(record.meta, sort_keys=True).encode("utf-8")
    return sample


def npy_header(data: bytes, path: str, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` member's header, without reading its data."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = read_header(stream)
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ShardError(path, f"member {member} is not a valid .npy file ({exc})") from exc
    return tuple(shape), np.dtype(dtype)


class MemberCheck:
    """Checks and decodes ``.npy`` members against the manifest's shapes and dtypes.

    Fast path: the writer's bytes start with exactly the header ``np.save`` writes for the
    expected shape and dtype and have the expected length, so the data is taken as is
    (``np.frombuffer``: no header parsing, no pickle). Anything else goes through
    ``np.load(allow_pickle=False)`` and is accepted only with the expected shape and dtype.
    """

    def __init__(self, shapes: dict[str, dict[str, Any]]) -> None:
        self.shapes = shapes
        self._expected: dict[str, tuple[bytes, int, np.dtype, tuple[int, ...]]] = {}
        for name, spec in shapes.items():
            dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
            encoded = npy_bytes(np.zeros(shape, dtype))
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            self._expected[name] = (encoded[:len(encoded) - nbytes], len(encoded), dtype, shape)

    def _fast(self, data: bytes | memoryview, name: str) -> bool:
        header, size, _, _ = self._expected[name]
        return len(data) == size and data[:len(header)] == header

    def _mismatch(self, shape: tuple[int, ...], dtype: np.dtype, name: str) -> str | None:
        want = self.shapes[name]
        if list(shape) != list(want["shape"]) or dtype.str != want["dtype"]:
            return (f"has shape {shape} dtype {dtype.str}, the manifest says shape "
                    f"{tuple(want['shape'])} dtype {want['dtype']}")
        return None

    def check(self, data: bytes, path: str, member: str) -> None:
        """Raise :class:`ShardError` unless ``data`` has the manifest's shape and dtype."""
        name = member.split(".", 1)[1].removesuffix(".npy")
        if self._fast(data, name):
            return
        shape, dtype = npy_header(data, path, member)
        problem = self._mismatch(shape, dtype, name)
        if problem:
            raise ShardError(path, f"member {member} {problem}")

    def decode(self, data: bytes | memoryview, path: str, member: str) -> np.ndarray:
        """The member's array (read-only when taken by the fast path)."""
        name = member.split(".", 1)[1].removesuffix(".npy")
        header, _, dtype, shape = self._expected[name]
        if self._fast(data, name):
            return np.frombuffer(data, dtype, offset=len(header)).reshape(shape)
        array = decode_array(data, path, member)
        problem = self._mismatch(array.shape, array.dtype, name)
        if problem:
            raise ShardError(path, f"member {member} {problem}")
        return array


def decode_array(data: bytes | memoryview, path: str, member: str) -> np.ndarray:
    """An ``.npy`` member's array; ``allow_pickle=False``."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ShardError(path, f"member {member} cannot be decoded ({exc})") from exc


def as_input(x: np.ndarray) -> np.ndarray:
    """Stored inputs as float32: ``uint8`` is scaled back to [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x


def stack(records: Sequence[EpisodeRecord], loss: str) -> EpisodeBatch:
    """Episodes (all of one split, so of equal shapes) as an :class:`EpisodeBatch`."""
    if not records:
        raise ValueError("stack: no episodes to stack")
    arrays = [np.stack([getattr(r, name) for r in records]) for name in ARRAYS]
    sx, sy, qx, qy = (torch.from_numpy(a) for a in
                      (as_input(arrays[0]), arrays[1], as_input(arrays[2]), arrays[3]))
    return EpisodeBatch(sx, sy, qx, qy, loss)  # type: ignore[arg-type]
