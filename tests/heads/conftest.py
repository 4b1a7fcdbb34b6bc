"""Builders shared by the text-decoder tests: a tiny seeded :class:`TextDecoder` and a padded
:class:`ExtendedContext`. The decoders use the special ids PAD 0, BOS 1, EOS 2 unless a test
overrides them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from mmctx.heads import TextDecoder
from mmctx.types import ExtendedContext

PAD, BOS, EOS = 0, 1, 2


def _make_decoder(seed: int = 0, **overrides) -> TextDecoder:
    torch.manual_seed(seed)
    args = dict(vocab_size=20, dim=32, num_layers=2, num_heads=4, max_seq_len=40, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    args.update(overrides)
    return TextDecoder(**args).eval()


def _make_context(lengths: Sequence[int] = (5, 3, 7), d: int = 32, seed: int = 1) -> ExtendedContext:
    """Random context tokens, sample b real at its first ``lengths[b]`` positions."""
    g = torch.Generator().manual_seed(seed)
    M = max(lengths)
    x = torch.randn(len(lengths), M, d, generator=g)
    mask = torch.arange(M)[None, :] < torch.tensor(lengths)[:, None]
    return ExtendedContext(x, mask, torch.zeros(len(lengths), M, dtype=torch.long), ("image",))


@pytest.fixture(scope="session")
def make_decoder() -> Callable[..., TextDecoder]:
    """``make_decoder(seed=0, **overrides)``: a seeded TextDecoder (vocab 20, dim 32, 2 layers,
    4 heads, max_seq_len 40, PAD/BOS/EOS 0/1/2) in eval mode; overrides replace arguments."""
    return _make_decoder


@pytest.fixture(scope="session")
def make_context() -> Callable[..., ExtendedContext]:
    """``make_context(lengths=(5, 3, 7), d=32, seed=1)``: a padded random context."""
    return _make_context
