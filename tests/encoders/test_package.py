"""The encoders package re-exports its public names (the Lightning check is tests/test_imports.py)."""

from __future__ import annotations

import mmctx.encoders


def test_public_names() -> None:
    encoders = {
        "TextTransformerEncoder", "HFTextEncoder", "HFVisionEncoder", "HFSpeechEncoder", "TimmImageEncoder",
        "RNNAudioEncoder",
    }
    assert set(mmctx.encoders.__all__) == encoders | {"map_state_dict_by_order", "image_transform"}
    for name in encoders:
        assert hasattr(getattr(mmctx.encoders, name), "forward")
    assert mmctx.encoders.hf.__all__ == ["HFTextEncoder", "HFVisionEncoder", "HFSpeechEncoder"]

