"""GAN losses: non-saturating and hinge, the R1 gradient penalty, and the auxiliary word
losses on the condition's words: classification (AC-GAN style) and multi-label (Omni-GAN
style, where the discriminator also learns that a generated sample shows none of them).

Plain PyTorch (no Lightning). The discriminator returns raw logits (B,); "real" logits are
its scores of data samples, "fake" logits its scores of generated ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GAN_LOSSES", "discriminator_loss", "generator_loss", "r1_penalty", "word_targets", "word_classification_loss",
    "word_multilabel_loss",
]

#: The adversarial losses :func:`discriminator_loss` and :func:`generator_loss` know.
GAN_LOSSES: tuple[str, ...] = ("non_saturating", "hinge")


def _check(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"GAN loss kind must be one of {GAN_LOSSES}, got {kind!r}")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "hinge") -> Tensor:
    """The discriminator's loss (to minimise).

    - ``"non_saturating"`` (the original GAN's binary cross-entropy):
      ``mean(softplus(-real)) + mean(softplus(fake))``;
    - ``"hinge"`` (SNGAN, BigGAN): ``mean(relu(1 - real)) + mean(relu(1 + fake))``.

    Shapes:
        real_logits: (B_real,), fake_logits: (B_fake,) → scalar
    """
    _check(kind)
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, kind: str = "hinge") -> Tensor:
    """The generator's loss (to minimise).

    - ``"non_saturating"``: ``mean(softplus(-fake))`` (= -log D(G(z)), strong gradients
      while the discriminator wins);
    - ``"hinge"``: ``-mean(fake)``.

    Shapes:
        fake_logits: (B,) → scalar
    """
    _check(kind)
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 gradient penalty (Mescheder et al., 2018): ``mean_b ||d logit_b / d x_b||^2``.

    ``real_inputs`` must have had ``requires_grad_(True)`` before the discriminator saw
    them. The graph is kept (``create_graph``) so the penalty trains the discriminator;
    scale it by ``gamma / 2`` and add it to :func:`discriminator_loss`.

    Shapes:
        real_logits: (B,), real_inputs: (B, ...) → scalar
    """
    if not real_inputs.requires_grad:
        raise ValueError("r1_penalty: real_inputs must require grad (call real.requires_grad_(True) first)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def word_targets(token_ids: Tensor, mask: Tensor, vocab_size: int, implied: Tensor | None = None) -> Tensor:
    """The bag of words of each condition as a distribution over the vocabulary: each
    token's count among the sample's real (``mask``) tokens, divided by their number.

    With ``implied`` (V, V), ``implied[u, v] = 1`` when word ``u`` implies word ``v`` (e.g.
    "dog" → "animals"): every occurrence of ``u`` also counts one ``v`` (before dividing).

    Shapes:
        token_ids: (B, T) int, mask: (B, T) bool, implied: (V, V) or None → (B, V) rows
        summing to 1 (0 for an empty row)
    """
    if implied is not None and tuple(implied.shape) != (vocab_size, vocab_size):
        raise ValueError(f"word_targets: implied must be ({vocab_size}, {vocab_size}), got {tuple(implied.shape)}")
    if token_ids.shape != mask.shape:
        raise ValueError(f"word_targets: token_ids {tuple(token_ids.shape)} and mask {tuple(mask.shape)} differ")
    ids = token_ids.long()
    if bool(mask.any()) and (int(ids[mask].min()) < 0 or int(ids[mask].max()) >= vocab_size):
        raise ValueError(f"word_targets: token ids must lie in [0, {vocab_size}) at real positions")
    counts = torch.zeros(ids.shape[0], vocab_size, device=ids.device)
    counts.scatter_add_(1, ids.clamp(0, vocab_size - 1), mask.float())
    if implied is not None:
        counts = counts + counts @ implied.to(counts)
    return counts / counts.sum(-1, keepdim=True).clamp_min(1.0)


def word_classification_loss(word_logits: Tensor, targets: Tensor) -> Tensor:
    """Auxiliary classification loss (AC-GAN, Odena et al. 2017, on the condition's words):
    the cross-entropy ``mean_b -sum_v t_bv log softmax(word_logits_b)_v`` between the
    discriminator's word prediction for a sample and the bag of words of its condition
    (:func:`word_targets`). The discriminator minimises it on real samples, the generator on
    its own, so each picture has to show what its caption names.

    Shapes:
        word_logits: (B, V), targets: (B, V) → scalar
    """
    if word_logits.shape != targets.shape:
        raise ValueError(
            f"word_classification_loss: logits {tuple(word_logits.shape)} and targets {tuple(targets.shape)} differ"
        )
    return -(targets * F.log_softmax(word_logits.float(), dim=-1)).sum(-1).mean()


def word_multilabel_loss(word_logits: Tensor, positives: Tensor) -> Tensor:
    """Multi-label loss over the vocabulary (the "omni-loss" of Omni-GAN, Zhou et al. 2021;
    Su's multi-label categorical cross-entropy): every positive word's logit is pushed
    above 0 and every other word's below 0, each side in one log-sum-exp so the few
    positives are not outweighed by the many negatives:
    ``mean_b [log(1 + sum_{v in P_b} exp(-s_bv)) + log(1 + sum_{v not in P_b} exp(s_bv))]``.

    With ``P_b`` the words of a *real* sample's caption, the discriminator learns to name
    them; with ``P_b`` empty for a *generated* sample, it learns that the sample shows
    none of them (so the generator cannot satisfy a fixed word classifier with pictures
    that do not look real); the generator minimises it with its own caption's words as
    ``P_b``.

    Shapes:
        word_logits: (B, V), positives: (B, V) bool (or > 0 marks a positive, e.g.
        :func:`word_targets`; an all-False row: no positive word) → scalar
    """
    if word_logits.shape != positives.shape:
        raise ValueError(
            f"word_multilabel_loss: logits {tuple(word_logits.shape)} and positives {tuple(positives.shape)} differ"
        )
    s = word_logits.float()
    pos = positives > 0 if positives.dtype != torch.bool else positives
    zero = s.new_zeros(s.shape[0], 1)  # the "1 +" inside each log
    neg_inf = torch.finfo(s.dtype).min
    pos_term = torch.logsumexp(torch.cat([zero, (-s).masked_fill(~pos, neg_inf)], dim=-1), dim=-1)  # (B,)
    neg_term = torch.logsumexp(torch.cat([zero, s.masked_fill(pos, neg_inf)], dim=-1), dim=-1)  # (B,)
    return (pos_term + neg_term).mean()
