"""reseed: the RNG state depends on (global seed, epoch, batch) only."""

from __future__ import annotations

import random

import numpy as np
import torch

from mmctx.trainers.seeding import reseed


def draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_same_seed_epoch_and_batch_give_the_same_draws(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    reseed(1, 4)
    first = draws()
    torch.rand(5)  # anything drawn in between does not matter
    reseed(1, 4)
    assert draws() == first
    reseed(1, 5)
    assert draws() != first
    monkeypatch.delenv("PL_GLOBAL_SEED")
    state = torch.get_rng_state()
    reseed(1, 4)  # without a global seed nothing is reseeded
    assert torch.equal(torch.get_rng_state(), state)
