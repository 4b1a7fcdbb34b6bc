"""Symmetric InfoNCE: a hand-computed value, symmetry, multi-positive targets, learnable τ."""

from __future__ import annotations

import math

import pytest
import torch

from mmctx.losses import ContrastiveLoss, info_nce

LOGITS = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0]])


def _log_softmax_at(values: list[float], i: int) -> float:
    return values[i] - math.log(sum(math.exp(v) for v in values))


def test_info_nce_equals_the_hand_computed_value():
    rows = [[2, 0, 1], [0, 1, 0], [1, 0, 3]]
    cols = [[2, 0, 1], [0, 1, 0], [1, 0, 3]]  # LOGITS is symmetric: columns read the same
    # row i: -log softmax(row i)[i]; by hand: row 0 -log(e^2/(e^2+1+e)), row 1 -log(e/(2+e)), ...
    row_loss = -(_log_softmax_at(rows[0], 0) + _log_softmax_at(rows[1], 1) + _log_softmax_at(rows[2], 2)) / 3
    col_loss = -(_log_softmax_at(cols[0], 0) + _log_softmax_at(cols[1], 1) + _log_softmax_at(cols[2], 2)) / 3
    expected = 0.5 * (row_loss + col_loss)
    assert expected == pytest.approx(0.5 * 2 * (
        math.log(1 + math.exp(-2) + math.exp(-1)) + math.log(1 + 2 * math.exp(-1)) + math.log(1 + math.exp(-2) + math.exp(-3))
    ) / 3)
    assert float(info_nce(LOGITS)) == pytest.approx(expected, abs=1e-6)


def test_info_nce_is_symmetric_and_averages_both_directions():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 2.0, 0.0], [2.0, 0.0, 1.0]])
    assert float(info_nce(logits)) == pytest.approx(float(info_nce(logits.t())), abs=1e-6)
    target = torch.arange(3)
    rows = torch.nn.functional.cross_entropy(logits, target)
    cols = torch.nn.functional.cross_entropy(logits.t(), target)
    assert rows != pytest.approx(cols)  # an asymmetric matrix: both directions really count
    assert float(info_nce(logits)) == pytest.approx(float(0.5 * (rows + cols)), abs=1e-6)


def test_duplicate_positives_share_the_target_mass():
    # samples 0 and 1 have the same caption: each row's target is 1/2 on both
    positives = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    logits = torch.tensor([[1.0, 1.0, -2.0], [1.0, 1.0, -2.0], [0.0, 0.0, 2.0]])
    loss = info_nce(logits, positives)
    # rows (a -> b): [1, 1, -2] twice with targets (1/2, 1/2, 0), then [0, 0, 2] with target 2
    row01 = -math.log(math.exp(1) / (2 * math.exp(1) + math.exp(-2)))
    row2 = -math.log(math.exp(2) / (math.exp(2) + 2))
    # columns (b -> a): [1, 1, 0] twice with targets (1/2, 1/2, 0), then [-2, -2, 2]
    col01 = -math.log(math.exp(1) / (2 * math.exp(1) + 1))
    col2 = -math.log(math.exp(2) / (math.exp(2) + 2 * math.exp(-2)))
    expected = 0.5 * ((2 * row01 + row2) / 3 + (2 * col01 + col2) / 3)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    # with the diagonal only, the duplicate counts as a negative and the loss is higher
    assert float(info_nce(logits)) > float(loss)
    with pytest.raises(ValueError, match="positive"):
        info_nce(logits, torch.zeros(3, 3, dtype=torch.bool))


def test_contrastive_loss_normalises_scales_and_learns_the_temperature():
    torch.manual_seed(0)
    loss_fn = ContrastiveLoss(temperature=0.1)
    assert loss_fn.temperature == pytest.approx(0.1, rel=1e-5)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    expected = info_nce(10.0 * torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).t())
    loss = loss_fn(3.0 * a, b)  # the scale of the inputs does not matter
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-5)
    loss.backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad != 0
    fixed = ContrastiveLoss(0.1, learnable=False)
    assert not any(p.requires_grad for p in fixed.parameters())
    # matched embeddings give a lower loss than random ones
    with torch.no_grad():
        assert float(loss_fn(a, a + 0.01 * torch.randn(4, 8))) < float(loss_fn(a, b))
