"""The training order: a function of (seed, epoch) only, and the same global batches on any
number of processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

__all__ = ["GlobalBatchSampler"]


class GlobalBatchSampler(DistributedSampler):
    """Shuffled (or sequential) sample indices for one process of ``num_replicas``.

    The order of epoch ``e`` is ``randperm(n)`` drawn from a generator seeded with
    ``(seed, e)`` — not from a generator that advances from epoch to epoch — so a run resumed
    at an epoch boundary sees exactly the batches the uninterrupted run saw (Lightning calls
    :meth:`set_epoch` at the start of every epoch, after a resume too). Iterated without
    anyone calling :meth:`set_epoch` (a plain PyTorch loop), it moves to the next epoch
    after each pass by itself.

    Under data parallelism every process takes its slice of each *global* batch: with
    ``W = num_replicas`` processes of batch ``b``, global batch ``g`` is
    ``order[g·W·b : (g+1)·W·b]`` and process ``r`` gets its ``r``-th block of ``b``. So W
    processes of batch ``b`` step through exactly the global batches one process of batch
    ``W·b`` does (``DistributedSampler`` instead deals indices round-robin from its own
    permutation, so the batches change with W). The last, partial global batch is split into
    W equal blocks; to keep every process at the same number of batches (DDP would hang
    otherwise), the order is first padded with its own first indices up to a multiple of W,
    as ``DistributedSampler`` does. With one process nothing is padded.

    It subclasses ``DistributedSampler`` only so that Lightning keeps it instead of
    substituting its own under DDP; ``DistributedSampler.__init__`` is not called (it needs an
    initialised process group). ``num_replicas``/``rank`` default to the process group's, or
    1/0 without one.

    Args:
        num_samples: samples in the data set (n).
        batch_size: per-process batch size (b), the data loader's.
        seed: base seed of the shuffle.
        shuffle: shuffle (else the order is 0..n-1, sharded the same way).
        num_replicas: processes W.
        rank: this process.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        Sampler.__init__(self)
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if num_samples < 1:
            raise ValueError(f"GlobalBatchSampler: num_samples must be >= 1, got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"GlobalBatchSampler: batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"GlobalBatchSampler: need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        self.n = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._driven = False  # set_epoch was called: the caller counts the epochs
        self._skip = 0  # samples to leave out at the start of the next pass (skip_batches)
        self.num_samples = -(-num_samples // num_replicas)  # per process (DistributedSampler's name)
        self.total_size = self.num_samples * num_replicas
        self.drop_last = False

    def skip_batches(self, num_batches: int) -> None:
        """Leave out the first ``num_batches`` batches of this process in the next pass only
        (resuming in the middle of an epoch; ``len`` stays that of the whole epoch)."""
        if num_batches < 0:
            raise ValueError(f"GlobalBatchSampler: num_batches must be >= 0, got {num_batches}")
        self._skip = num_batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on."""
        self.epoch = epoch
        self._driven = True

    def epoch_order(self) -> list[int]:
        """The order of the current epoch's ``n`` indices, before padding (a subclass may
        change how they are shuffled, e.g. shard by shard)."""
        if self.shuffle:
            return torch.randperm(self.n, generator=self.epoch_generator()).tolist()
        return list(range(self.n))

    def epoch_generator(self) -> torch.Generator:
        """A generator seeded with (seed, epoch) only."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def global_order(self) -> list[int]:
        """The padded order of the current epoch, over all processes (length ``total_size``)."""
        order = self.epoch_order()
        pad = self.total_size - self.n
        return order + (order * (pad // self.n + 1))[:pad]

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        if not self._driven:
            self.epoch += 1
        step = self.batch_size * self.num_replicas
        mine: list[int] = []
        for start in range(0, self.total_size, step):
            chunk = order[start : start + step]  # one global batch (the last may be partial)
            block = len(chunk) // self.num_replicas  # a multiple of W thanks to the padding
            mine.extend(chunk[self.rank * block : (self.rank + 1) * block])
        skip, self._skip = self._skip, 0
        return iter(mine[skip:])

    def __len__(self) -> int:
        return self.num_samples
