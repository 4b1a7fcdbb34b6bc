"""Fusion layers: merge per-modality tokens into one extended context.

Plain PyTorch modules with one call signature, ``fusion(tokens) -> ExtendedContext``;
importing this package never imports Lightning::

    from mmctx.fusion import ConcatFusion, CrossAttentionFusion
"""

from mmctx.fusion.base import Fusion
from mmctx.fusion.causal_lm import CrossAttendingDecoderLayer, GatedCausalSelfAttention, MultimodalCausalLM, find_decoder_layers
from mmctx.fusion.concat import ConcatFusion
from mmctx.fusion.cross_attention import CrossAttentionFusion, GatedCrossAttentionBlock
from mmctx.fusion.gated import GatedFusion
from mmctx.fusion.perceiver import PerceiverBlock, PerceiverResampler

__all__ = [
    "Fusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "GatedCrossAttentionBlock",
    "GatedFusion",
    "PerceiverResampler",
    "PerceiverBlock",
    "MultimodalCausalLM",
    "GatedCausalSelfAttention",
    "CrossAttendingDecoderLayer",
    "find_decoder_layers",
]
