"""The encoders package re-exports its public names (the Lightning check is tests/test_imports.py)."""

from __future__ import annotations

import mmctx.encoders


def test_public_names() -> None:
    assert set(mmctx.encoders.__all__) == {
        "TextTransformerEncoder", "HFTextEncoder", "TimmImageEncoder", "RNNAudioEncoder",
    }
    for name in mmctx.encoders.__all__:
        assert hasattr(getattr(mmctx.encoders, name), "forward")

