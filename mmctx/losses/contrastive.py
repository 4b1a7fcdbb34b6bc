"""Symmetric InfoNCE (CLIP-style) contrastive loss between two modalities, learnable temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmctx.types import check_shape

__all__ = ["ContrastiveLoss", "info_nce", "positive_targets"]


def positive_targets(positives: Tensor) -> Tensor:
    """Row-normalised target distribution of a positive-pair matrix.

    Each row's probability mass is spread evenly over its positives (several samples can
    share a caption, so a text may have several matching images).

    Shapes:
        positives: (B, B') bool, ``positives[i, j]`` ⇔ j is a positive of i; every row needs one
        returns: (B, B') float, rows sum to 1
    """
    if not bool(positives.any(dim=1).all()):
        raise ValueError("positives: every row needs at least one positive (the diagonal, at least)")
    p = positives.float()
    return p / p.sum(dim=1, keepdim=True)


def info_nce(logits: Tensor, positives: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE of a similarity-logit matrix.

    ``0.5 * (CE(rows) + CE(columns))``: each row i of ``logits`` is a softmax over the
    candidates j whose target is i's positive(s); each column the same, transposed. Without
    ``positives`` the positives are the diagonal (``logits[i, i]``), the classic CLIP loss.

    Shapes:
        logits: (B, B) float, ``logits[i, j]`` = similarity of a_i and b_j (already scaled)
        positives: (B, B) bool or None (diagonal)
        returns: () float
    """
    check_shape("info_nce logits", logits, ("B", logits.shape[0]))
    logits = logits.float()
    if positives is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    check_shape("info_nce positives", positives, tuple(logits.shape))
    rows = positive_targets(positives)  # (B, B)
    cols = positive_targets(positives.t())  # (B, B)
    return 0.5 * (F.cross_entropy(logits, rows) + F.cross_entropy(logits.t(), cols))


class ContrastiveLoss(nn.Module):
    """InfoNCE between two batches of embeddings, with a learnable temperature.

    Embeddings are L2-normalised; the logits are cosine similarities divided by the
    temperature ``τ``, stored as ``logit_scale = log(1/τ)`` and clamped to
    ``τ >= 1/max_scale`` (CLIP clamps at 1/100) so training stays stable. Works for any pair
    of modalities; call it on *gathered* embeddings under DDP (every sample of the global
    batch is a negative of every other).

    Args:
        temperature: initial temperature τ.
        learnable: learn τ (otherwise it is a buffer).
        max_scale: the largest ``1/τ``.
    """

    def __init__(self, temperature: float = 0.07, learnable: bool = True, max_scale: float = 100.0) -> None:
        super().__init__()
        if temperature <= 0 or max_scale <= 0:
            raise ValueError(f"ContrastiveLoss: temperature and max_scale must be > 0, got {temperature}, {max_scale}")
        scale = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.max_log_scale = math.log(max_scale)

    @property
    def temperature(self) -> float:
        """The current temperature τ (after clamping)."""
        return float(torch.exp(-self.logit_scale.detach().clamp(max=self.max_log_scale)))

    def logits(self, a: Tensor, b: Tensor) -> Tensor:
        """Scaled cosine similarities. Shapes: a (B, E), b (B', E) → (B, B')."""
        check_shape("ContrastiveLoss a", a, ("B", "E"))
        check_shape("ContrastiveLoss b", b, ("B'", a.shape[1]))
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        return scale * F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).t()

    def forward(self, a: Tensor, b: Tensor, positives: Tensor | None = None) -> Tensor:
        """Symmetric InfoNCE.

        Shapes:
            a: (B, E), b: (B, E) embeddings of the same B samples in two modalities
            positives: (B, B) bool or None (the diagonal)
            returns: () float
        """
        return info_nce(self.logits(a, b), positives)
