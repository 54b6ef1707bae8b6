"""Packing the procedural families (sinusoid, linear representation) into fixed task pools.

Episodes of split ``s`` are drawn in chunks: chunk ``c`` is
``family.sample(chunk_size, seed, step=c, shard=split_stream(s))``, so a pool is a pure
function of (family parameters, seed, split, chunk_size). A family is any dataclass with
``sample``, ``loss`` and its config name as ``family`` (the task room's ``Sinusoid``,
``LinearRepresentation``); the packer does not import it. ``LinearRepresentation``'s ground
truth ``B*`` is stored as ``b_star.npy`` beside the manifest (its file name and sha256 are in
the family parameters); readers expose it as ``ShardEpisodeSource.b_star``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from distmeta.data.episode import EpisodeRecord, npy_bytes
from distmeta.data.manifest import Manifest, SourceIdentity, canonical_json, join, open_dir
from distmeta.data.writer import ShardLayout, SplitSpec, publish, split_stream, write_split
from distmeta.errors import DataError

logger = logging.getLogger(__name__)
B_STAR_FILE = "b_star.npy"


def family_params(family: Any) -> dict[str, Any]:
    """The family's constructor parameters, JSON-ready (``b_star`` excluded)."""
    fields = [f.name for f in dataclasses.fields(family) if f.init]
    return {name: _jsonable(getattr(family, name)) for name in fields}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _records(family: Any, name: str, split: str, n_episodes: int,
             seed: int, chunk_size: int) -> Iterator[EpisodeRecord]:
    for chunk, start in enumerate(range(0, n_episodes, chunk_size)):
        batch = family.sample(min(chunk_size, n_episodes - start), seed, chunk, split_stream(split))
        for t in range(batch.n_tasks):
            meta = {"family": name, "split": split, "index": start + t, "seed": seed,
                    "chunk": chunk, "task": t, "way": None, "shot": batch.support_x.shape[1],
                    "query": batch.query_x.shape[1], "source_classes": []}
            yield EpisodeRecord(batch.support_x[t].numpy(), batch.support_y[t].numpy(),
                                batch.query_x[t].numpy(), batch.query_y[t].numpy(), meta)


def _write_b_star(out_dir: str, b_star: Any) -> str:
    data = npy_bytes(b_star)
    fs, base = open_dir(out_dir)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(join(base, B_STAR_FILE)) as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def pack_procedural(family: Any, out_dir: str,
                    episodes: Mapping[str, int], seed: int = 0, *,
                    layout: ShardLayout | None = None, chunk_size: int = 256,
                    progress: bool = False) -> Manifest:
    """Pack fixed task pools of a procedural family: ``episodes={"train": 10000, "test": 1000}``.

    Streams (one chunk of ``chunk_size`` tasks in memory); returns the updated manifest.
    """
    name = getattr(family, "family", None)
    if not isinstance(name, str) or not dataclasses.is_dataclass(family) or not hasattr(family, "sample"):
        raise DataError(f"family {type(family).__name__}: not a procedural task family (a dataclass with "
                         "sample(), loss and its config name as `family`)")
    if chunk_size < 1:
        raise DataError(f"chunk_size={chunk_size}: must be >= 1")
    params = family_params(family)
    b_star = getattr(family, "b_star", None)
    if b_star is not None:
        params.update(b_star_file=B_STAR_FILE, b_star_sha256=_write_b_star(out_dir, b_star))
    source = SourceIdentity(name, hashlib.sha256(canonical_json(params).encode()).hexdigest(),
                            {"procedural": True, "generator": f"distmeta.tasks.{type(family).__name__}"})
    rows = []
    for split, n in episodes.items():
        if n < 1:
            raise DataError(f"episodes[{split!r}]={n}: must be >= 1")
        spec = SplitSpec(split, name, params, family.loss, seed, source)
        rows += write_split(out_dir, spec, _records(family, name, split, n, seed, chunk_size),
                            total=n, layout=layout, progress=progress)
    logger.info("packed %s into %s: %s", name, out_dir, dict(episodes))
    return publish(out_dir, rows)
