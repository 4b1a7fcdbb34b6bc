"""Hugging Face ``transformers`` towers behind the mmctx encoder contract.

=================  ========  ====================================  ===============================
encoder            modality  data / mask                           tokens
=================  ========  ====================================  ===============================
HFTextEncoder      text      (B, T) long ids / (B, T) bool         (B, T, D), one per token
HFVisionEncoder    image     (B, 3, H, W) float / (B,) bool        (B, N, D), patches or grid cells
HFSpeechEncoder    audio     (B, S) 16 kHz waveform / (B, S) bool  (B, N, D), frames
=================  ========  ====================================  ===============================

Each takes a hub id or a local folder (``model``) or a config dict (``config``, random init),
and has ``freeze``, ``train_last_layers``, ``trainable`` and ``gradient_checkpointing``.
transformers is imported when an encoder is built.
"""

from mmctx.encoders.hf.speech import HFSpeechEncoder
from mmctx.encoders.hf.text import HFTextEncoder
from mmctx.encoders.hf.vision import HFVisionEncoder

__all__ = ["HFTextEncoder", "HFVisionEncoder", "HFSpeechEncoder"]
