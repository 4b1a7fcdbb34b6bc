"""GAN losses against hand-computed values, and the R1 penalty's gradient."""

from __future__ import annotations

import math

import pytest
import torch

from mmctx.losses import GAN_LOSSES, discriminator_loss, generator_loss, r1_penalty

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hinge_losses_match_hand_computed_values():
    # D: mean(relu(1 - [2, -1])) + mean(relu(1 + [0.5, -3])) = mean(0, 2) + mean(1.5, 0)
    assert discriminator_loss(REAL, FAKE, "hinge").item() == pytest.approx(1.0 + 0.75)
    # G: -mean([0.5, -3])
    assert generator_loss(FAKE, "hinge").item() == pytest.approx(1.25)


def test_non_saturating_losses_match_hand_computed_values():
    d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert discriminator_loss(REAL, FAKE, "non_saturating").item() == pytest.approx(d, rel=1e-6)
    g = (softplus(-0.5) + softplus(3.0)) / 2  # -log sigmoid(fake)
    assert generator_loss(FAKE, "non_saturating").item() == pytest.approx(g, rel=1e-6)
    # it is the binary cross-entropy with real = 1, fake = 0
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert discriminator_loss(REAL, FAKE, "non_saturating").item() == pytest.approx(
        (bce(REAL, torch.ones(2)) + bce(FAKE, torch.zeros(2))).item(), rel=1e-6
    )


def test_r1_penalty_is_the_mean_squared_input_gradient_and_trains_the_critic():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    x = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], requires_grad=True)
    logits = (x * w).sum(1) + x.pow(2).sum(1)  # d logit_b / d x_b = w + 2 x_b
    penalty = r1_penalty(logits, x)
    g = w.detach() + 2 * x.detach()  # [[3, -2, 4.5], [1, 0, -1.5]]
    expected = (g.pow(2).sum(1)).mean()  # (9 + 4 + 20.25 + 1 + 0 + 2.25) / 2
    assert penalty.item() == pytest.approx(18.25)
    assert penalty.item() == pytest.approx(expected.item())
    penalty.backward()  # create_graph: the penalty has a gradient w.r.t. the critic's weights
    # d/dw mean_b ||w + 2 x_b||^2 = mean_b 2 (w + 2 x_b)
    assert torch.allclose(w.grad, (2 * g).mean(0))


def test_unknown_kind_and_r1_without_grad_are_errors():
    assert set(GAN_LOSSES) == {"hinge", "non_saturating"}
    with pytest.raises(ValueError, match="wasserstein"):
        discriminator_loss(REAL, FAKE, "wasserstein")
    with pytest.raises(ValueError, match="wasserstein"):
        generator_loss(FAKE, "wasserstein")
    with pytest.raises(ValueError, match="requires_grad_"):
        r1_penalty(REAL, torch.zeros(2, 3))


def test_word_targets_and_word_classification_loss_match_hand_computed_values():
    from mmctx.losses import word_classification_loss, word_targets

    ids = torch.tensor([[1, 3, 3, 0], [2, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    t = word_targets(ids, mask, vocab_size=4)  # the padding (id 0, masked) never counts
    assert torch.allclose(t, torch.tensor([[0.0, 1 / 3, 0.0, 2 / 3], [0.0, 0.0, 1.0, 0.0]]))
    logits = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    z0 = math.log(1 + math.e + 1 + math.e**2)
    row0 = -(1 / 3 * (1.0 - z0) + 2 / 3 * (2.0 - z0))
    row1 = math.log(4.0)  # uniform prediction, one word
    assert word_classification_loss(logits, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="token ids"):
        word_targets(ids, mask, vocab_size=3)


def test_word_multilabel_loss_matches_hand_computed_values():
    from mmctx.losses import word_multilabel_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]])
    positives = torch.tensor([[True, False, False], [False, False, False]])
    # row 0: positive {0}, negatives {1, 2}; row 1 (a generated sample): no positive word
    row0 = math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0) + math.exp(0.5))
    row1 = 0.0 + math.log(1 + 1 + math.e + math.exp(-3.0))
    assert word_multilabel_loss(logits, positives).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # word_targets' distribution marks the same positives as a bool mask
    assert word_multilabel_loss(logits, positives.float() * 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # pushing the positive up and the negatives down lowers it
    better = logits + torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    assert word_multilabel_loss(better, positives) < word_multilabel_loss(logits, positives)
    with pytest.raises(ValueError, match="positives"):
        word_multilabel_loss(logits, positives[:, :2])


def test_word_targets_with_implied_words_count_them_with_the_word():
    from mmctx.losses import word_targets

    ids = torch.tensor([[1, 3, 3, 0], [2, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    implied = torch.zeros(5, 5)
    implied[3, 4] = 1.0  # word 3 implies word 4 (e.g. "dog" → "animals")
    t = word_targets(ids, mask, vocab_size=5, implied=implied)
    # row 0: counts 1 (id 1), 2 (id 3), 2 (id 4, once per id 3) → / 5; row 1 has no word 3
    assert torch.allclose(t, torch.tensor([[0.0, 0.2, 0.0, 0.4, 0.4], [0.0, 0.0, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="implied"):
        word_targets(ids, mask, vocab_size=5, implied=torch.zeros(4, 4))
