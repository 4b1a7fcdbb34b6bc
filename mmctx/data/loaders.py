"""Data loaders with behaviour of their own (plain ``torch.utils.data.DataLoader`` subclasses)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["EpochDataLoader"]


class EpochDataLoader(DataLoader):
    """A DataLoader that tells its :class:`~mmctx.data.augment.AugmentedDataset` (possibly
    under a ``Subset``) which pass over the data starts, each time it is iterated: the
    sampler's ``epoch`` when it has one (:class:`~mmctx.data.samplers.GlobalBatchSampler`, so a resumed run draws the
    same augmentations), else the number of earlier passes."""

    def __iter__(self) -> Iterator[Any]:
        dataset = self.dataset
        while not hasattr(dataset, "set_epoch") and hasattr(dataset, "dataset"):
            dataset = dataset.dataset  # e.g. a Subset of the augmented data set
        if hasattr(dataset, "set_epoch"):
            passes = getattr(self, "_mmctx_passes", 0)
            # the sampler's epoch (set by Lightning, also after a resume) when it has one
            dataset.set_epoch(getattr(self.sampler, "epoch", passes))
            self._mmctx_passes = passes + 1
        return super().__iter__()
