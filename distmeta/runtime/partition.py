"""The fixed partition of the meta-parameters over ``runtime.server_shards`` server actors.

Largest parameter first, each onto the shard with the fewest elements so far (ties: the lower
shard), so the shards' optimiser work and input bytes are balanced. A pure function of the
parameters' names and sizes: every worker and every server shard computes the same one.
"""

from __future__ import annotations

from distmeta.errors import ConfigError


def partition(sizes: dict[str, int], shards: int) -> list[list[str]]:
    """``shards`` lists of parameter names (each in the model's order)."""
    if shards > len(sizes):
        raise ConfigError(f"runtime.server_shards={shards}: the model has only {len(sizes)} parameter tensors")
    order = {name: i for i, name in enumerate(sizes)}
    load = [0] * shards
    parts: list[list[str]] = [[] for _ in range(shards)]
    for name in sorted(sizes, key=lambda n: (-sizes[n], order[n])):
        k = min(range(shards), key=lambda j: (load[j], j))
        parts[k].append(name)
        load[k] += sizes[name]
    return [sorted(part, key=order.__getitem__) for part in parts]
