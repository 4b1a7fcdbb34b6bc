"""Modality encoders: each maps ``(data, mask)`` to :class:`mmctx.types.Tokens` and has ``out_dim``.

======================  ========  ===================================  =============================
encoder                 modality  data / mask                          tokens
======================  ========  ===================================  =============================
TextTransformerEncoder  text      (B, T) long / (B, T) bool            (B, T, D), one per token
HFTextEncoder           text      (B, T) long / (B, T) bool            (B, T, D), one per token
TimmImageEncoder        image     (B, C, H, W) float / (B,) bool       (B, h*w, D), grid cells
HFVisionEncoder         image     (B, C, H, W) float / (B,) bool       (B, N, D), patches or cells
RNNAudioEncoder         audio     (B, S) float / (B, S) bool           (B, N, D), 4 STFT frames
HFSpeechEncoder         audio     (B, S) 16 kHz float / (B, S) bool    (B, N, D), 20 ms frames
======================  ========  ===================================  =============================

The pretrained towers (``TimmImageEncoder``, ``HF*Encoder``) load weights by hub name or
local path as timm and transformers do, and say how their inputs must be preprocessed
(``preprocessing``; see :mod:`mmctx.encoders.preprocessing`). timm, torchaudio and
transformers are imported when an encoder is built, not on import.
"""

from mmctx.encoders.audio import RNNAudioEncoder
from mmctx.encoders.hf import HFSpeechEncoder, HFTextEncoder, HFVisionEncoder
from mmctx.encoders.image import TimmImageEncoder
from mmctx.encoders.key_map import map_state_dict_by_order
from mmctx.encoders.preprocessing import image_transform
from mmctx.encoders.text import TextTransformerEncoder

__all__ = [
    "TextTransformerEncoder",
    "HFTextEncoder",
    "HFVisionEncoder",
    "HFSpeechEncoder",
    "TimmImageEncoder",
    "RNNAudioEncoder",
    "map_state_dict_by_order",
    "image_transform",
]
