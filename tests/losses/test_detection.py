"""token_detection_loss: balanced background / event cross-entropy over real tokens."""

from __future__ import annotations

import pytest
import torch

from mmctx.losses import token_detection_loss


def _by_hand(logits, mask, inside, labels, background=None):
    pos, neg = [], []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if not mask[b, t]:
                continue
            logp = logits[b, t].log_softmax(-1)
            (pos if inside[b, t] else neg).append(-logp[1 + labels[b]] if inside[b, t] else -logp[0])
    if background is not None:
        neg += [-row.log_softmax(-1)[0] for row in background]
    loss = torch.stack(neg).mean()
    return loss + torch.stack(pos).mean() if pos else loss


def test_value_is_the_mean_over_background_plus_the_mean_over_event_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 4, generator=g, requires_grad=True)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4], dtype=torch.bool)
    inside = torch.zeros(3, 7, dtype=torch.bool)
    inside[0, 2:4] = True
    inside[1, 6] = True  # padding: an event token past the end does not count
    labels = torch.tensor([2, 0, 1])
    background = torch.randn(2, 4, generator=g)
    loss = token_detection_loss(logits, mask, inside, labels, background)
    torch.testing.assert_close(loss, _by_hand(logits, mask, inside, labels, background), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert logits.grad[~mask].abs().sum() == 0 and logits.grad[mask].abs().sum() > 0  # padding gets nothing
    # the event tokens weigh as much as all the rest: their share is 1/2 of the loss, not 2/15
    plain = token_detection_loss(logits.detach(), mask, torch.zeros_like(inside), labels)
    torch.testing.assert_close(plain, _by_hand(logits.detach(), mask, torch.zeros_like(inside), labels))


def test_shapes_are_checked_by_name():
    with pytest.raises(ValueError, match="token_detection_loss labels"):
        token_detection_loss(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool), torch.zeros(3, dtype=torch.long))
