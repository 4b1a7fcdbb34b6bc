"""MLM masking: only real, non-special tokens are chosen; the loss counts only those."""

from __future__ import annotations

import torch

from mmctx.losses import IGNORE_INDEX, mask_tokens, masked_token_loss

PAD, MASK, V = 0, 4, 50


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (8, 12), generator=g)
    lengths = torch.tensor([12, 1, 5, 7, 3, 12, 2, 9])
    mask = torch.arange(12)[None, :] < lengths[:, None]
    return ids.masked_fill(~mask, PAD), mask


def test_only_real_tokens_are_masked_and_labelled():
    ids, mask = batch()
    for seed in range(20):
        corrupted, labels = mask_tokens(ids, mask, MASK, V, probability=0.3,
                                        generator=torch.Generator().manual_seed(seed))
        chosen = labels != IGNORE_INDEX
        assert not (chosen & ~mask).any(), "a padding position was chosen"
        assert torch.equal(corrupted[~mask], ids[~mask]), "padding was changed"
        assert torch.equal(corrupted[mask & ~chosen], ids[mask & ~chosen]), "an unchosen token was changed"
        assert torch.equal(labels[chosen], ids[chosen])
        assert chosen.any(dim=1).all(), "every sample with tokens gets at least one"
    # BERT's split: mostly [MASK], some random, some unchanged, over many draws
    big = torch.randint(5, V, (200, 50), generator=torch.Generator().manual_seed(1))
    corrupted, labels = mask_tokens(big, torch.ones_like(big, dtype=torch.bool), MASK, V,
                                    generator=torch.Generator().manual_seed(2))
    chosen = labels != IGNORE_INDEX
    assert 0.13 < chosen.float().mean() < 0.17
    assert 0.75 < (corrupted[chosen] == MASK).float().mean() < 0.85


def test_special_ids_are_never_masked():
    ids, mask = batch()
    ids[:, 0] = 3  # e.g. an [EOS] on every row
    corrupted, labels = mask_tokens(ids, mask, MASK, V, probability=1.0, special_ids=[3],
                                    generator=torch.Generator().manual_seed(0))
    assert (labels[:, 0] == IGNORE_INDEX).all()
    assert ((labels != IGNORE_INDEX) == (mask & (ids != 3))).all()  # probability 1: every other real token


def test_loss_ignores_unmasked_and_padding_positions():
    ids, mask = batch()
    _, labels = mask_tokens(ids, mask, MASK, V, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(8, 12, V, requires_grad=True)
    loss = masked_token_loss(logits, labels)
    chosen = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[chosen], labels[chosen])
    assert torch.allclose(loss, expected)
    # changing the logits anywhere else changes nothing
    other = logits.detach().clone()
    other[~chosen] = torch.randn(int((~chosen).sum()), V) * 10
    assert torch.allclose(masked_token_loss(other, labels), expected)
    loss.backward()
    assert (logits.grad[~chosen] == 0).all()
    assert (logits.grad[chosen].abs().sum(-1) > 0).all(), "every chosen position gets a gradient"
    nothing = masked_token_loss(logits, torch.full_like(labels, IGNORE_INDEX))
    assert nothing.detach().item() == 0.0
