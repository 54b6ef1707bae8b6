"""The fixed reduction tree: the sum is bit-identical for every worker count, every
assignment of shards to workers and nodes, and after reassignment (plain classes, no Ray)."""

import random

import pytest
import torch

from distmeta.runtime.tree import aligned_blocks, combine, deal, presum, split
from distmeta.runtime.worker import NodeAggregator


def leaves(n_shards, seed=0):
    """Per-shard sums whose float32 sum depends on the order of addition."""
    g = torch.Generator().manual_seed(seed)
    return {s: ({"w": (torch.randn(7, generator=g) * 10 ** float(s % 5)).float(), "b": torch.randn(1, generator=g)}, 3)
            for s in range(n_shards)}


def total(blocks, n_shards):
    (_, _, grads, n), = combine(blocks, n_shards)
    return grads, n


def reference(n_shards, seed=0):
    return total([(s, s + 1, g, n) for s, (g, n) in leaves(n_shards, seed).items()], n_shards)


def random_partition(shards, parts, rng):
    """Shards dealt to ``parts`` owners any which way (not contiguous)."""
    owners = {s: rng.randrange(parts) for s in shards}
    return [[s for s in shards if owners[s] == p] for p in range(parts)]


@pytest.mark.parametrize("n_shards", [1, 2, 3, 5, 8, 13, 16])
def test_any_assignment_gives_the_same_bits(n_shards):
    rng = random.Random(n_shards)
    want, n_want = reference(n_shards)
    base = leaves(n_shards)
    for trial in range(40):
        workers = rng.randint(1, n_shards)
        plan = random_partition(list(range(n_shards)), workers, rng)
        per_worker = [presum({s: base[s] for s in mine}, n_shards) for mine in plan if mine]
        blocks = [b for bl in per_worker for b in bl]
        if trial % 2:  # and through node aggregators: workers grouped onto nodes at random
            nodes = random_partition(list(range(len(per_worker))), rng.randint(1, len(per_worker)), rng)
            blocks = [b for group in nodes if group
                      for b in NodeAggregator(n_shards).combine(*[per_worker[i] for i in group])]
        got, n = total(blocks, n_shards)
        assert n == n_want == 3 * n_shards
        assert all(torch.equal(got[k], want[k]) for k in want), (n_shards, plan)


def test_the_tree_is_not_the_sequential_sum_but_is_fixed():
    """The order matters in float32 (so a fixed order is needed at all)."""
    base = leaves(8)
    seq = base[0][0]["w"].clone()
    for s in range(1, 8):
        seq = seq + base[s][0]["w"]
    tree, _ = reference(8)
    rev = base[7][0]["w"].clone()
    for s in reversed(range(7)):
        rev = rev + base[s][0]["w"]
    assert not torch.equal(seq, rev)  # addition order changes bits here
    assert torch.equal(tree["w"], reference(8)[0]["w"])


def test_aligned_blocks_and_split():
    assert split(0, 8) == 4 and split(0, 5) == 4 and split(4, 8) == 6 and split(0, 3) == 2
    assert aligned_blocks(range(8), 8) == [(0, 8)]
    assert aligned_blocks([0, 1, 2, 3], 8) == [(0, 4)]
    assert aligned_blocks([2, 3, 4], 8) == [(2, 4), (4, 5)]
    assert aligned_blocks([3, 4], 5) == [(3, 4), (4, 5)]


def test_deal_gives_contiguous_balanced_runs_grouped_by_node():
    plan = deal(list(range(8)), [0, 1, 2, 3], {0: "b", 1: "a", 2: "b", 3: "a"})
    assert plan == {1: [0, 1], 3: [2, 3], 0: [4, 5], 2: [6, 7]}
    assert deal([1, 4, 6], [5, 9]) == {5: [1, 4], 9: [6]}
    assert deal([0, 1], [0, 1, 2]) == {0: [0], 1: [1]}


def test_missing_overlapping_and_stray_blocks_are_named():
    base = leaves(4)
    blocks = presum(base, 4)
    with pytest.raises(ValueError, match="logical shard 3 is missing"):
        combine(presum({s: base[s] for s in range(3)}, 4), 4)
    with pytest.raises(ValueError, match="sent twice"):
        combine(blocks + blocks, 4)
    with pytest.raises(ValueError, match="not tree nodes"):
        combine(blocks + [(1, 3, base[1][0], 3)], 4)
