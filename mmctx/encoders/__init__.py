"""Modality encoders: each maps ``(data, mask)`` to :class:`mmctx.types.Tokens` and has ``out_dim``.

=====================  ========  ===============================  =========================
encoder                modality  data / mask                      tokens
=====================  ========  ===============================  =========================
TextTransformerEncoder text      (B, T) long / (B, T) bool        (B, T, D), one per token
HFTextEncoder          text      (B, T) long / (B, T) bool        (B, T, D), one per token
TimmImageEncoder       image     (B, C, H, W) float / (B,) bool   (B, h*w, D), grid cells
RNNAudioEncoder        audio     (B, S) float / (B, S) bool       (B, N, D), 4 STFT frames
=====================  ========  ===============================  =========================

timm, torchaudio and transformers are imported when an encoder is built, not on import.
"""

from mmctx.encoders.audio import RNNAudioEncoder
from mmctx.encoders.hf import HFTextEncoder
from mmctx.encoders.image import TimmImageEncoder
from mmctx.encoders.text import TextTransformerEncoder

__all__ = ["TextTransformerEncoder", "HFTextEncoder", "TimmImageEncoder", "RNNAudioEncoder"]
