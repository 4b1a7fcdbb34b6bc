"""Masked-token modelling (BERT's MLM) for text encoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmctx.types import check_shape

__all__ = ["IGNORE_INDEX", "mask_tokens", "masked_token_loss"]

#: Label of positions that do not count in the loss.
IGNORE_INDEX = -100


def mask_tokens(
    ids: Tensor,
    mask: Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    special_ids: tuple[int, ...] | list[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Choose tokens to predict and corrupt them (BERT: 80 % ``mask_id``, 10 % a random
    token, 10 % unchanged).

    Only real tokens (``mask`` True) that are not special ids are ever chosen; every sample
    with at least one such token gets at least one chosen (so a short caption always
    contributes). Padding and unchosen positions get the label :data:`IGNORE_INDEX`.

    Shapes:
        ids: (B, T) long; mask: (B, T) bool, True at real tokens
        returns: corrupted ids (B, T) long (padding untouched) and labels (B, T) long
            (the original id where chosen, ``IGNORE_INDEX`` elsewhere)
    """
    check_shape("mask_tokens ids", ids, ("B", "T"))
    check_shape("mask_tokens mask", mask, tuple(ids.shape))
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"mask_tokens: probability must be in (0, 1], got {probability}")
    if replace_prob < 0 or random_prob < 0 or replace_prob + random_prob > 1:
        raise ValueError(f"mask_tokens: need replace_prob, random_prob >= 0 and sum <= 1, got {replace_prob}, {random_prob}")
    device = ids.device
    eligible = mask.clone()  # (B, T)
    for special in special_ids:
        eligible &= ids != special

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=generator.device if generator else "cpu").to(device)

    chosen = eligible & (rand(*ids.shape) < probability)  # (B, T)
    # a sample with eligible tokens but none chosen: choose one of its eligible tokens at random
    empty = eligible.any(dim=1) & ~chosen.any(dim=1)  # (B,)
    if bool(empty.any()):
        pick = (rand(*ids.shape) * eligible.float()).argmax(dim=1)  # (B,) a random eligible position
        chosen[empty, pick[empty]] = True
    labels = ids.masked_fill(~chosen, IGNORE_INDEX)  # (B, T)
    draw = rand(*ids.shape)
    to_mask = chosen & (draw < replace_prob)
    to_random = chosen & (draw >= replace_prob) & (draw < replace_prob + random_prob)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, device=generator.device if generator else "cpu")
    corrupted = ids.masked_fill(to_mask, mask_id)
    corrupted = torch.where(to_random, random_ids.to(device), corrupted)
    return corrupted, labels


def masked_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the chosen positions only.

    Shapes:
        logits: (B, T, V) float; labels: (B, T) long, :data:`IGNORE_INDEX` where not counted
        returns: () float; 0 (with a gradient path) when nothing is counted
    """
    check_shape("masked_token_loss logits", logits, ("B", "T", "V"))
    check_shape("masked_token_loss labels", labels, tuple(logits.shape[:2]))
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
