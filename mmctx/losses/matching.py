"""Matching loss (ITM): "do these two inputs belong together?", with hard negatives.

The negatives are mined from the contrastive similarities (ALBEF): for each sample of
modality a, a sample of modality b that is *not* one of its positives, drawn with probability
``softmax(similarity)`` over the non-positives (hard, but not always the hardest, which is
often a near-duplicate), and the same from b's side. The pairs are then fused and
classified by a binary head; this module builds the pairs and the loss, the model fuses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmctx.types import check_shape

__all__ = ["matching_loss", "matching_pairs", "mine_hard_negatives"]


def mine_hard_negatives(
    similarity: Tensor,
    positives: Tensor | None = None,
    generator: torch.Generator | None = None,
    hardest: bool = False,
) -> tuple[Tensor, Tensor]:
    """One negative column per row, never a positive of that row.

    Args:
        similarity: similarities of rows (e.g. images) to columns (e.g. texts).
        positives: True where column j matches row i; None: the diagonal.
        generator: random source of the draw.
        hardest: take the most similar non-positive instead of drawing.

    Shapes:
        similarity: (B, B') float; positives: (B, B') bool
        returns: index (B,) long, the negative column of each row; valid (B,) bool, False
            for rows whose every column is a positive (their index is meaningless)
    """
    check_shape("mine_hard_negatives similarity", similarity, ("B", "B'"))
    if positives is None:
        positives = torch.eye(*similarity.shape, dtype=torch.bool, device=similarity.device)
    check_shape("mine_hard_negatives positives", positives, tuple(similarity.shape))
    candidates = ~positives  # (B, B')
    valid = candidates.any(dim=1)  # (B,)
    scores = similarity.detach().float().masked_fill(~candidates, float("-inf"))  # (B, B')
    scores = torch.where(valid[:, None], scores, torch.zeros_like(scores))  # rows with no candidate: anything
    if hardest:
        index = scores.argmax(dim=1)
    else:
        weights = scores.softmax(dim=1)  # (B, B'), zero at positives
        index = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return index, valid


def matching_pairs(
    similarity: Tensor,
    positives: Tensor | None = None,
    generator: torch.Generator | None = None,
    hardest: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Index pairs for ITM: the B positive pairs, then a hard negative b for each a, then a
    hard negative a for each b (rows without a negative are left out).

    Shapes:
        similarity: (B, B) float, a-to-b similarities of one batch; positives: (B, B) bool
        returns: index_a (P,), index_b (P,) long and labels (P,) long (1 = matching),
            with B <= P <= 3B
    """
    check_shape("matching_pairs similarity", similarity, ("B", similarity.shape[0]))
    batch = similarity.shape[0]
    if positives is None:
        positives = torch.eye(batch, dtype=torch.bool, device=similarity.device)
    rows = torch.arange(batch, device=similarity.device)
    neg_b, ok_b = mine_hard_negatives(similarity, positives, generator, hardest)  # a_i with b_neg
    neg_a, ok_a = mine_hard_negatives(similarity.t(), positives.t(), generator, hardest)  # a_neg with b_j
    index_a = torch.cat([rows, rows[ok_b], neg_a[ok_a]])
    index_b = torch.cat([rows, neg_b[ok_b], rows[ok_a]])
    labels = torch.cat([torch.ones(batch), torch.zeros(int(ok_b.sum()) + int(ok_a.sum()))]).long()
    return index_a, index_b, labels.to(similarity.device)


def matching_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary matching cross-entropy. Shapes: logits (P, 2), labels (P,) long in {0, 1} → ()."""
    check_shape("matching_loss logits", logits, ("P", 2))
    check_shape("matching_loss labels", labels, (logits.shape[0],))
    return F.cross_entropy(logits.float(), labels)
