"""GlobalBatchSampler: the order depends on (seed, epoch) only, and W processes of batch b see
exactly the global batches of one process of batch W·b."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from mmctx.data import GlobalBatchSampler


def batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def test_order_is_a_function_of_seed_and_epoch():
    a = GlobalBatchSampler(50, 8, seed=3)
    first = list(a)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert list(a) != first  # undriven: the next pass is the next epoch
    fresh = GlobalBatchSampler(50, 8, seed=3)
    fresh.set_epoch(1)
    second = list(fresh)
    resumed = GlobalBatchSampler(50, 8, seed=3)  # a new process, e.g. after a resume
    resumed.set_epoch(1)
    assert list(resumed) == second == list(resumed)  # driven: set_epoch decides, passes do not
    resumed.set_epoch(0)
    assert list(resumed) == first
    assert list(GlobalBatchSampler(50, 8, seed=4)) != first
    assert list(GlobalBatchSampler(5, 2, shuffle=False)) == [0, 1, 2, 3, 4]
    assert isinstance(a, DistributedSampler)  # so Lightning keeps it under DDP


@pytest.mark.parametrize("n", [48, 50, 7])
def test_processes_split_every_global_batch(n):
    b, world = 4, 3
    single = GlobalBatchSampler(n, b * world, seed=1, num_replicas=1, rank=0)
    single.set_epoch(2)
    ranks = []
    for r in range(world):
        s = GlobalBatchSampler(n, b, seed=1, num_replicas=world, rank=r)
        s.set_epoch(2)
        ranks.append(list(s))
        assert len(ranks[-1]) == len(s) == -(-n // world)  # every process the same length
    per_rank = [batches(x, b) for x in ranks]
    assert len({len(x) for x in per_rank}) == 1  # same number of batches: DDP never hangs
    padded = GlobalBatchSampler(n, b, seed=1, num_replicas=world, rank=0)
    padded.set_epoch(2)
    order = padded.global_order()  # the single process's order, padded to a multiple of W
    assert order[:n] == list(single) and order[n:] == list(single)[: len(order) - n]
    for g, reference in enumerate(batches(list(single), b * world)):
        union = [i for r in range(world) for i in per_rank[r][g]]
        assert union == order[g * b * world : (g + 1) * b * world]
        assert union[: len(reference)] == reference  # the same samples in the same global batch
    assert sorted({i for x in ranks for i in x}) == list(range(n))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size"):
        GlobalBatchSampler(10, 0)
    with pytest.raises(ValueError, match="rank=2, num_replicas=2"):
        GlobalBatchSampler(10, 2, num_replicas=2, rank=2)


def test_skip_batches_leaves_out_the_trained_batches_of_the_next_pass_only():
    s = GlobalBatchSampler(20, 4, seed=0)
    s.set_epoch(3)
    whole = list(s)
    s.skip_batches(2)
    assert list(s) == whole[8:] and len(s) == 20  # len stays the epoch's (Lightning counts batches)
    assert list(s) == whole  # only once
    with pytest.raises(ValueError, match="num_batches"):
        s.skip_batches(-1)
