"""Heads consume an extended context and return logits or samples (never a loss)."""

from mmctx.heads.classifier import ClassifierHead
from mmctx.heads.decoder import DecoderCache, TextDecoder

__all__ = ["ClassifierHead", "TextDecoder", "DecoderCache"]
