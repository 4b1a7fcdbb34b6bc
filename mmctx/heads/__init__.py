"""Heads consume an extended context and return logits or samples (never a loss)."""

from mmctx.heads.causal_lm import CausalLMDecoder
from mmctx.heads.classifier import ClassifierHead
from mmctx.heads.decoder import DecoderCache, TextDecoder
from mmctx.heads.gan import ConditionalGenerator, LogMelCodec, ProjectionDiscriminator, SpectrogramGenerator

__all__ = [
    "ClassifierHead",
    "TextDecoder",
    "CausalLMDecoder",
    "DecoderCache",
    "ConditionalGenerator",
    "SpectrogramGenerator",
    "ProjectionDiscriminator",
    "LogMelCodec",
]
