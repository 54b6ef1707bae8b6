"""The fixed reduction tree over logical shards, and how shards are dealt to workers.

The R logical shards are the leaves of one binary tree, fixed by R alone: the node covering
shards ``[lo, hi)`` splits at ``lo`` + the largest power of two below ``hi - lo``, so every
node but the last along each level is an aligned, power-of-two block. A node's sum is always
``sum(left) + sum(right)``, computed by whoever holds the node's shards: a worker holding an
aligned block sums that subtree itself, a node aggregator sums its workers' blocks, the server
sums what is left. Floating-point addition is not associative, but here every addition is
the same addition of the same two operands wherever it is done, so the total is bit-identical
for every worker count, every assignment and after any reassignment.

A *block* is ``(lo, hi, grads, n_tasks)``: the sum of the meta-gradient sums of shards
``lo .. hi-1`` (and their task count). Ray-free: the plain classes and the tests use it as is.
"""

from __future__ import annotations

from collections.abc import Iterable

from distmeta.types import Params

Block = tuple[int, int, Params, int]


def split(lo: int, hi: int) -> int:
    """Where the node ``[lo, hi)`` (``hi - lo >= 2``) splits: a power-of-two left child."""
    width = hi - lo
    return lo + (1 << ((width - 1).bit_length() - 1))


def aligned_blocks(shards: Iterable[int], n_shards: int) -> list[tuple[int, int]]:
    """The fewest tree nodes that cover exactly ``shards`` (the maximal aligned blocks)."""
    held = set(shards)
    out: list[tuple[int, int]] = []

    def visit(lo: int, hi: int) -> None:
        inside = sum(1 for s in range(lo, hi) if s in held)
        if inside == hi - lo:
            out.append((lo, hi))
        elif inside:
            mid = split(lo, hi)
            visit(lo, mid)
            visit(mid, hi)

    visit(0, n_shards)
    return out


def _add(a: Params, b: Params) -> Params:
    return {k: a[k] + b[k] for k in a}


def combine(blocks: Iterable[Block], n_shards: int, want: list[tuple[int, int]] | None = None) -> list[Block]:
    """Sum ``blocks`` up the tree into the nodes ``want`` (default: the root). Each input
    must be a tree node; every shard of a wanted node must be covered exactly once."""
    have: dict[tuple[int, int], Block] = {}
    for block in blocks:
        lo, hi = block[0], block[1]
        if (lo, hi) in have:
            raise ValueError(f"logical shards {lo}..{hi - 1} were sent twice")
        have[(lo, hi)] = block

    def node(lo: int, hi: int) -> Block:
        if (lo, hi) in have:
            return have.pop((lo, hi))
        if hi - lo == 1:
            raise ValueError(f"logical shard {lo} is missing")
        mid = split(lo, hi)
        left, right = node(lo, mid), node(mid, hi)
        return lo, hi, _add(left[2], right[2]), left[3] + right[3]

    result = [node(lo, hi) for lo, hi in (want or [(0, n_shards)])]
    if have:
        raise ValueError(f"blocks {sorted(have)} are not tree nodes of {n_shards} logical shards, or overlap")
    return result


def presum(leaves: dict[int, tuple[Params, int]], n_shards: int) -> list[Block]:
    """A worker's per-shard results summed into its maximal aligned blocks."""
    blocks = [(s, s + 1, grads, n) for s, (grads, n) in leaves.items()]
    return combine(blocks, n_shards, aligned_blocks(leaves, n_shards))


def deal(shards: list[int], workers: list[int], node_of: dict[int, str] | None = None) -> dict[int, list[int]]:
    """Contiguous, near-equal runs of ``shards``, one per worker, the workers of one node side
    by side (so a node's run is as few aligned blocks as the sizes allow). Who computes a
    shard never changes the sums, only how fast they come."""
    order = sorted(workers, key=lambda w: ((node_of or {}).get(w, ""), w))
    n, shards = len(order), sorted(shards)
    plan: dict[int, list[int]] = {}
    start = 0
    for i, w in enumerate(order):
        size = len(shards) // n + (1 if i < len(shards) % n else 0)
        if size:
            plan[w] = shards[start:start + size]
        start += size
    return plan
