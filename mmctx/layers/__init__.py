"""Building blocks: attention over SDPA, RoPE, transformer blocks, masks and positions."""

from mmctx.layers.attention import MultiHeadAttention
from mmctx.layers.block import FeedForward, TransformerBlock, TransformerEncoder
from mmctx.layers.local_attention import (
    SlidingWindowAttention,
    SlidingWindowBlock,
    SlidingWindowEncoder,
    sliding_window_mask,
)
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
    "SlidingWindowAttention",
    "SlidingWindowBlock",
    "SlidingWindowEncoder",
    "sliding_window_mask",
]
