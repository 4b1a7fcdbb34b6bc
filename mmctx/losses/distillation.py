"""Distillation losses: a student learns from a frozen teacher's logits and features.

Plain PyTorch (no Lightning). :class:`~mmctx.trainers.DistillationTask` combines them; a
projection from the student's width to the teacher's (a trainable module) belongs to the
task, not to these functions.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["distillation_loss", "feature_distillation_loss"]


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Knowledge distillation (Hinton, Vinyals & Dean, 2015)::

        loss = alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels)

    with ``p^T = softmax(logits / T)``; the KL divergence is averaged over the batch
    (``F.kl_div(..., reduction="batchmean")``) and scaled by ``T^2`` so its gradients keep
    the same size whatever the temperature. The teacher's logits are detached.

    Shapes:
        student_logits: (B, K)
        teacher_logits: (B, K)
        labels: (B,) long class indices
        returns: the scalar loss and its terms ``{"kd": T^2 * KL, "ce": CE}``
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"distillation_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ (same classes, same order?)"
        )
    if temperature <= 0:
        raise ValueError(f"distillation_loss: temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation_loss: alpha must be in [0, 1], got {alpha}")
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (B, K)
    kd = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2
    ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    return alpha * kd + (1.0 - alpha) * ce, {"kd": kd, "ce": ce}


def feature_distillation_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """FitNets-style feature matching (Romero et al., 2015) with a scale-free target: the
    mean squared error between the layer-normalised (no affine) student and teacher
    features, averaged over the real positions.

    Normalising both sides per vector makes the loss independent of the teacher's feature
    scale (a teacher trained longer has larger activations) and keeps it near 2 for
    unrelated features, near 0 for matching ones. The student's features must already have
    the teacher's width (project them first); the teacher's are detached.

    Shapes:
        student: (B, N, D) or (B, D)
        teacher: the same shape as ``student``
        mask: (B, N) bool, True at real positions (None: all real); only with (B, N, D)
        returns: scalar loss
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"feature_distillation_loss: student features {tuple(student.shape)} and teacher features "
            f"{tuple(teacher.shape)} differ (project the student's to the teacher's width; same grid?)"
        )
    d = student.shape[-1]
    s = F.layer_norm(student.float(), (d,))
    t = F.layer_norm(teacher.detach().float(), (d,))
    per_vector = (s - t).pow(2).mean(-1)  # (B, N) or (B,)
    if mask is None:
        return per_vector.mean()
    if mask.shape != per_vector.shape:
        raise ValueError(f"feature_distillation_loss: mask {tuple(mask.shape)} does not fit features {tuple(student.shape)}")
    weight = mask.to(per_vector.dtype)
    return (per_vector * weight).sum() / weight.sum().clamp_min(1.0)
