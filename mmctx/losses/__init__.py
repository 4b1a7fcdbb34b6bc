"""Losses (heads never compute their loss): contrastive, matching, masked-token, CTC, token detection,
distillation and GAN losses.

Plain PyTorch, no Lightning.
"""

from mmctx.losses.contrastive import ContrastiveLoss, info_nce, positive_targets
from mmctx.losses.ctc import ctc_loss, ctc_targets
from mmctx.losses.detection import token_detection_loss
from mmctx.losses.distillation import distillation_loss, feature_distillation_loss
from mmctx.losses.gan import (
    GAN_LOSSES,
    discriminator_loss,
    generator_loss,
    r1_penalty,
    word_classification_loss,
    word_multilabel_loss,
    word_targets,
)
from mmctx.losses.masked import IGNORE_INDEX, mask_tokens, masked_token_loss
from mmctx.losses.matching import matching_loss, matching_pairs, mine_hard_negatives

__all__: list[str] = [
    "ctc_loss",
    "ctc_targets",
    "token_detection_loss",
    "distillation_loss",
    "feature_distillation_loss",
    "GAN_LOSSES",
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "word_targets",
    "word_classification_loss",
    "word_multilabel_loss",
    "ContrastiveLoss",
    "info_nce",
    "positive_targets",
    "matching_loss",
    "matching_pairs",
    "mine_hard_negatives",
    "IGNORE_INDEX",
    "mask_tokens",
    "masked_token_loss",
]
