"""ITM hard negatives: never a positive, drawn from the similarities; the pair list and loss."""

from __future__ import annotations

import torch

from mmctx.losses import matching_loss, matching_pairs, mine_hard_negatives


def test_hard_negatives_are_never_the_positive_pair():
    torch.manual_seed(0)
    sim = torch.randn(6, 6)
    sim.fill_diagonal_(100.0)  # the positive is by far the most similar: it must still never be drawn
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        index, valid = mine_hard_negatives(sim, generator=g)
        assert valid.all()
        assert not (index == torch.arange(6)).any()
    hardest, _ = mine_hard_negatives(sim, hardest=True)
    off = sim.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
    assert torch.equal(hardest, off.argmax(dim=1))


def test_samples_with_the_same_caption_are_never_negatives_and_hard_ones_are_preferred():
    groups = torch.tensor([0, 0, 1, 2, 2, 3])  # 0/1 and 3/4 share a caption
    positives = groups[:, None] == groups[None, :]
    sim = torch.zeros(6, 6)
    sim[0, 1] = sim[3, 4] = 50.0  # the duplicates look most similar
    sim[0, 2] = 5.0  # the hardest true negative of row 0
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(6)
    for _ in range(300):
        index, valid = mine_hard_negatives(sim, positives, generator=g)
        assert not positives[torch.arange(6), index].any()
        counts[index[0]] += 1
    assert counts[2] > 250  # softmax over the negatives: e^5 dominates
    # a row whose every column is a positive has no negative
    index, valid = mine_hard_negatives(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool))
    assert not valid.any()


def test_matching_pairs_and_loss():
    sim = torch.randn(4, 4)
    positives = torch.eye(4, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True
    index_a, index_b, labels = matching_pairs(sim, positives, torch.Generator().manual_seed(0))
    assert index_a.shape == index_b.shape == labels.shape == (12,)
    assert labels[:4].tolist() == [1, 1, 1, 1] and labels[4:].sum() == 0
    assert torch.equal(index_a[:4], torch.arange(4)) and torch.equal(index_b[:4], torch.arange(4))
    assert not positives[index_a[4:], index_b[4:]].any()  # every negative pair is a real negative
    logits = torch.zeros(12, 2, requires_grad=True)
    loss = matching_loss(logits, labels)
    assert loss.item() == torch.log(torch.tensor(2.0)).item()
    loss.backward()
    # mean cross-entropy at equal logits: d/dlogits = (softmax - one-hot) / pairs
    expected = (0.5 - torch.nn.functional.one_hot(labels.long(), 2).float()) / 12
    torch.testing.assert_close(logits.grad, expected)
