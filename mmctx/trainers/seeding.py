"""Reproducible training: the RNGs reseeded from (global seed, epoch, batch)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["reseed"]


def reseed(epoch: int, batch: int) -> None:
    """Seed torch, numpy and random from (``PL_GLOBAL_SEED``, epoch, batch); nothing without
    a seed (``seed_everything`` sets it)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        value = ((int(seed) * 1_000_003 + epoch) * 1_000_003 + batch + 1) % 2**32
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)
