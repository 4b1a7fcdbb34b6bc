"""Distillation losses equal hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmctx.losses import distillation_loss, feature_distillation_loss


def test_distillation_loss_equals_the_hand_computed_value():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 2])
    T, alpha = 2.0, 0.25
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        for s, t in zip(s_row, t_row):
            p_t, p_s = math.exp(t / T) / zt, math.exp(s / T) / zs
            kl += p_t * (math.log(p_t) - math.log(p_s))
    kl /= 2  # batch mean
    ce = -(math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))) + math.log(math.exp(1) / (2 * math.exp(0.5) + math.exp(1)))) / 2
    loss, terms = distillation_loss(student, teacher, labels, temperature=T, alpha=alpha)
    assert terms["kd"].item() == pytest.approx(kl * T**2, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert loss.item() == pytest.approx(alpha * kl * T**2 + (1 - alpha) * ce, rel=1e-5)
    assert distillation_loss(teacher, teacher, labels, T, 1.0)[0].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        distillation_loss(student, teacher[:, :2], labels)
    assert F.cross_entropy(student, labels).item() == pytest.approx(ce, rel=1e-5)


def test_feature_distillation_loss_equals_the_hand_computed_value():
    # layer norm without affine: (x - mean) / sqrt(var + 1e-5), biased variance
    def norm(v):
        m = sum(v) / len(v)
        var = sum((a - m) ** 2 for a in v) / len(v)
        return [(a - m) / math.sqrt(var + 1e-5) for a in v]

    student = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 0.0]], [[2.0, -2.0, 0.0, 1.0], [5.0, 5.0, 5.0, 6.0]]])
    teacher = torch.tensor([[[4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 0.0, 0.0]], [[10.0, -10.0, 0.0, 5.0], [1.0, 2.0, 3.0, 9.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    per = [[sum((a - b) ** 2 for a, b in zip(norm(s), norm(t))) / 4 for s, t in zip(srow, trow)]
           for srow, trow in zip(student.tolist(), teacher.tolist())]
    # reversed ramp: each normalised component is the negation, so the error is 4 * mean(x^2) ~ 4
    assert per[0][0] == pytest.approx(4.0, rel=1e-4)
    # a scaled copy (the teacher's 5x) matches exactly after normalisation
    assert per[1][0] == pytest.approx(0.0, abs=1e-6)
    got = feature_distillation_loss(student, teacher, mask)
    assert got.item() == pytest.approx((per[0][0] + per[0][1] + per[1][0]) / 3, rel=1e-5)
    assert feature_distillation_loss(student, teacher).item() == pytest.approx(sum(map(sum, per)) / 4, rel=1e-5)
    pooled = feature_distillation_loss(student[:, 0], teacher[:, 0])  # (B, D)
    assert pooled.item() == pytest.approx((per[0][0] + per[1][0]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="differ"):
        feature_distillation_loss(student, teacher[..., :3])
    with pytest.raises(ValueError, match="mask"):
        feature_distillation_loss(student, teacher, mask[:, :1])


def test_feature_distillation_loss_sends_no_gradient_to_the_teacher():
    s = torch.randn(2, 3, 8, requires_grad=True)
    t = torch.randn(2, 3, 8, requires_grad=True)
    feature_distillation_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
