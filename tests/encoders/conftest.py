"""Fixtures of the encoder tests: tiny random-init Hugging Face configs, offline hub, no sockets."""

from __future__ import annotations

from typing import Any

import pytest

#: tiny random-init configs of every Hugging Face family the encoders support (dims 8-32)
_VISION = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8)
_W2V = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=[8, 8],
    conv_kernel=[10, 3], conv_stride=[5, 2], num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
    layerdrop=0.0, mask_time_prob=0.0, hidden_dropout=0.0, attention_dropout=0.0,
)
TINY: dict[str, dict[str, Any]] = {
    "vit": dict(model_type="vit", **_VISION),
    "clip": dict(model_type="clip_vision_model", **_VISION),
    "siglip": dict(model_type="siglip_vision_model", **_VISION),
    "convnext": dict(model_type="convnext", hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32),
    "wav2vec2": dict(model_type="wav2vec2", **_W2V),  # group-norm feature encoder (like wav2vec2-base)
    "wav2vec2_layer": dict(model_type="wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True, **_W2V),
    "hubert": dict(model_type="hubert", **_W2V),
    "whisper": dict(
        model_type="whisper", d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=16,
        max_source_positions=50, max_target_positions=8,  # a 1 s window (50 tokens, 100 mel frames)
    ),
    "bert": dict(
        model_type="bert", vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=24,
    ),
}


@pytest.fixture
def tiny() -> dict[str, dict[str, Any]]:
    """Fresh copies of the tiny configs, by family."""
    return {name: dict(config) for name, config in TINY.items()}


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HF_HUB_OFFLINE=1`` for this test (huggingface_hub reads the variable once, at import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
