"""The token builder shared by the fusion tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch

from mmctx.types import Tokens


def _make_tokens(dims: Mapping[str, int], lens: Mapping[str, int], batch: int = 3, seed: int = 0) -> dict[str, Tokens]:
    """Random tokens per modality m: x (batch, lens[m], dims[m]); sample 0 is full length, the
    others have random lengths of at least 1."""
    g = torch.Generator().manual_seed(seed)
    tokens = {}
    for m, d in dims.items():
        n = lens[m]
        x = torch.randn(batch, n, d, generator=g)
        lengths = torch.randint(1, n + 1, (batch,), generator=g)
        lengths[0] = n
        mask = torch.arange(n)[None] < lengths[:, None]
        tokens[m] = Tokens(x, mask)
    return tokens


@pytest.fixture(scope="session")
def make_tokens() -> Callable[..., dict[str, Tokens]]:
    """``make_tokens(dims, lens, batch=3, seed=0)``: padded random tokens per modality."""
    return _make_tokens
