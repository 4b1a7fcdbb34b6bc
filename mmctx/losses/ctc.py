"""CTC auxiliary loss: an encoder's frame tokens spell out the caption (Graves et al. 2006).

An attention decoder trained alone on speech → text first learns the caption *language* and
may attend to the audio only late (or never, in a short CPU budget): its loss falls while the
encoder gets almost no signal. Connectionist temporal classification on the encoder's tokens
gives the encoder a direct, monotonic-alignment signal — the joint CTC/attention recipe of
ESPnet (Kim et al. 2017, ``ctc_weight`` ≈ 0.3). Plain PyTorch over ``F.ctc_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmctx.types import check_shape

__all__ = ["ctc_loss", "ctc_targets"]


def ctc_targets(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """CTC targets of caption ids laid out ``[bos] w1 .. wk [eos] [pad]..``: the words only.

    Shapes:
        ids: (B, T) long; mask: (B, T) bool, True at real tokens (BOS and EOS included)
        returns: targets (B, T-2) long (zeros after each row's words), lengths (B,) long
    """
    check_shape("ctc_targets ids", ids, ("B", "T"))
    check_shape("ctc_targets mask", mask, tuple(ids.shape))
    lengths = mask.long().sum(dim=1) - 2  # (B,) words without BOS and EOS
    if ids.shape[1] < 2 or bool((lengths < 0).any()):
        raise ValueError(
            f"ctc_targets: every caption needs BOS and EOS; real lengths {mask.long().sum(dim=1).tolist()}"
        )
    words = ids[:, 1:-1]  # (B, T-2)
    keep = torch.arange(words.shape[1], device=ids.device)[None, :] < lengths[:, None]  # (B, T-2)
    return words.masked_fill(~keep, 0), lengths


def ctc_loss(logits: Tensor, mask: Tensor, targets: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
    """Mean CTC loss per target token over the samples that have frames.

    Samples with no real frame (a missing modality: an all-False ``mask`` row) are left out,
    not scored as impossible; a sample with fewer frames than CTC needs gives zero loss
    (``zero_infinity``) rather than an infinite one. With no sample left the loss is a zero
    that still depends on ``logits`` (so every parameter keeps a gradient, of zero).

    Args:
        logits: per-frame scores over the vocabulary plus the blank.
        mask: True at real frames (a prefix of each row).
        targets: target ids (never ``blank``), padded after ``target_lengths``.
        target_lengths: real targets per sample.
        blank: index of the blank class in ``logits``.

    Shapes:
        logits: (B, N, C); mask: (B, N) bool; targets: (B, S) long; target_lengths: (B,) long
        returns: scalar
    """
    check_shape("ctc_loss logits", logits, ("B", "N", "C"))
    check_shape("ctc_loss mask", mask, tuple(logits.shape[:2]))
    check_shape("ctc_loss targets", targets, (logits.shape[0], "S"))
    check_shape("ctc_loss target_lengths", target_lengths, (logits.shape[0],))
    if not 0 <= blank < logits.shape[-1]:
        raise ValueError(f"ctc_loss: blank={blank} is not a class of logits with C={logits.shape[-1]}")
    input_lengths = mask.long().sum(dim=1)  # (B,)
    present = input_lengths > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    log_probs = logits[present].float().log_softmax(dim=-1).transpose(0, 1)  # (N, B', C)
    return F.ctc_loss(
        log_probs,
        targets[present],
        input_lengths[present],
        target_lengths[present],
        blank=blank,
        reduction="mean",  # each sample's loss / its target length, then the batch mean
        zero_infinity=True,
    )
