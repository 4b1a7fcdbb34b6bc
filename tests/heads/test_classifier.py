from __future__ import annotations

import pytest
import torch

from mmctx.heads import ClassifierHead
from mmctx.types import ExtendedContext


def ctx(b=2, n=5, d=16):
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    return ExtendedContext(torch.randn(b, n, d, generator=g), mask, torch.zeros(b, n, dtype=torch.long))


@pytest.mark.parametrize("pooling", ["mean", "attention", "max"])
@pytest.mark.parametrize("hidden_dim", [0, 32])
def test_logits_shape_padding_invariance_and_grads(pooling, hidden_dim, assert_gradients):
    torch.manual_seed(0)
    head = ClassifierHead(16, num_classes=4, pooling=pooling, hidden_dim=hidden_dim, num_heads=2)
    c = ctx()
    logits = head(c)
    assert logits.shape == (2, 4)
    noisy = ExtendedContext(c.x.masked_fill(~c.mask[..., None], 50.0), c.mask, c.modality)
    assert torch.allclose(logits, head(noisy), atol=1e-5)
    head.double()
    logits = head(ExtendedContext(c.x.double(), c.mask, c.modality))
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    assert_gradients(head)


def test_errors():
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierHead(16)
    with pytest.raises(ValueError, match="pooling"):
        ClassifierHead(16, 3, pooling="median")


def test_max_pooling_reads_one_token_whatever_the_length():
    """Max pooling keeps a single outstanding token's features undiluted: appending more
    ordinary tokens never changes the pooled vector (attention or mean pooling would)."""
    torch.manual_seed(0)
    head = ClassifierHead(8, num_classes=3, pooling="max").eval()
    needle = torch.full((1, 1, 8), 5.0)
    for n in (10, 1000):
        hay = torch.rand(1, n, 8)  # every channel < 1 < 5
        x = torch.cat([hay[:, : n // 2], needle, hay[:, n // 2 :]], dim=1)
        mask = torch.ones(1, n + 1, dtype=torch.bool)
        pooled = head.pool(ExtendedContext(x, mask, torch.zeros(1, n + 1, dtype=torch.long)))
        assert torch.equal(pooled, needle[:, 0])
    empty = ExtendedContext(torch.randn(1, 4, 8), torch.zeros(1, 4, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.long))
    assert torch.equal(head.pool(empty), torch.zeros(1, 8))  # no real token: zeros, not -inf
