"""Building blocks: attention over SDPA (full or banded), RoPE, transformer blocks, masks and positions,
differentiable augmentation."""

from mmctx.layers.attention import MultiHeadAttention
from mmctx.layers.banded_attention import banded_attention, sliding_window_mask
from mmctx.layers.block import FeedForward, TransformerBlock, TransformerEncoder
from mmctx.layers.diff_augment import DIFF_AUGMENT_OPS, DiffAugment
from mmctx.layers.masks import attention_mask, lengths_to_mask, masked_mean
from mmctx.layers.positions import sincos_1d, sincos_2d
from mmctx.layers.rope import RotaryEmbedding

__all__ = [
    "MultiHeadAttention",
    "FeedForward",
    "TransformerBlock",
    "TransformerEncoder",
    "RotaryEmbedding",
    "attention_mask",
    "lengths_to_mask",
    "masked_mean",
    "sincos_1d",
    "sincos_2d",
    "banded_attention",
    "sliding_window_mask",
    "DiffAugment",
    "DIFF_AUGMENT_OPS",
]
