"""Token-level detection loss: which tokens of a long sequence hold the event, and its class.

An auxiliary loss for long inputs read through a max (or attention) readout, whose gradient
otherwise reaches one token of thousands: the spoken task's frame loss
(:meth:`~mmctx.context.StreamingMemoryEncoder.frame_loss`) and the long-context answer task's
key loss (:class:`~mmctx.trainers.CaptioningTask`'s ``key_loss_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmctx.types import check_shape

__all__ = ["token_detection_loss"]


def token_detection_loss(
    logits: Tensor, mask: Tensor, inside: Tensor, labels: Tensor, background: Tensor | None = None
) -> Tensor:
    """Balanced cross-entropy of tokens as (background, class 0, ..., class C-1).

    A real token (``mask`` True) inside the event (``inside`` True) is of class ``labels[b]``
    (logit channel ``1 + labels[b]``), every other real token is background (channel 0), and so
    is every row of ``background`` (e.g. a stream's final memory tokens). The loss is the mean
    over the background tokens plus the mean over the event tokens, so the few tokens of a short
    event weigh as much as the thousands around it; a batch with no event token gives only the
    background mean. Padding never counts.

    Shapes:
        logits: (B, L, C+1) float; mask, inside: (B, L) bool; labels: (B,) long in [0, C);
        background: (M, C+1) float or None
        returns: scalar
    """
    B, L, K = logits.shape
    check_shape("token_detection_loss mask", mask, (B, L))
    check_shape("token_detection_loss inside", inside, (B, L))
    check_shape("token_detection_loss labels", labels, (B,))
    if background is not None:
        check_shape("token_detection_loss background", background, ("M", K))
    target = torch.where(inside, labels[:, None] + 1, torch.zeros_like(labels)[:, None])  # (B, L): 0 = background
    ce = F.cross_entropy(logits.float().reshape(B * L, K), target.reshape(-1), reduction="none").view(B, L)
    pos, neg = inside & mask, ~inside & mask
    neg_sum, neg_count = ce[neg].sum(), neg.sum()
    if background is not None:
        extra = F.cross_entropy(
            background.float(), torch.zeros(background.shape[0], dtype=torch.long, device=logits.device), reduction="none"
        )
        neg_sum, neg_count = neg_sum + extra.sum(), neg_count + extra.numel()
    loss = neg_sum / neg_count if int(neg_count) > 0 else logits.sum() * 0  # (keeps the graph when empty)
    if bool(pos.any()):
        loss = loss + ce[pos].mean()
    return loss
