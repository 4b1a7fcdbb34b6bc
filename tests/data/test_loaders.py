"""EpochDataLoader: each pass over the data tells the (augmented) data set which epoch starts."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from mmctx.data.loaders import EpochDataLoader
from mmctx.data.samplers import GlobalBatchSampler


class EpochProbe(Dataset):
    """Items are the epoch the data set was told when they were loaded."""

    def __init__(self) -> None:
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return self.epoch


def test_counts_passes_without_a_sampler_epoch() -> None:
    loader = EpochDataLoader(Subset(EpochProbe(), [0, 1, 2]), batch_size=3)  # found under the Subset
    assert [next(iter(loader)).tolist() for _ in range(3)] == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]


def test_follows_the_sampler_epoch() -> None:
    sampler = GlobalBatchSampler(4, batch_size=4, seed=0)
    loader = EpochDataLoader(EpochProbe(), batch_size=4, sampler=sampler)
    sampler.set_epoch(7)  # as Lightning does, also after a resume
    assert torch.equal(next(iter(loader)), torch.full((4,), 7))
    sampler.set_epoch(3)
    assert torch.equal(next(iter(loader)), torch.full((4,), 3))
