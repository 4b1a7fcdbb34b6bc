"""With every socket blocked, every encoder builds and runs from configs and local files; hub ids
that are neither cached nor reachable fail with a message that says how to make them work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmctx.encoders import (
    HFSpeechEncoder,
    HFTextEncoder,
    HFVisionEncoder,
    RNNAudioEncoder,
    TextTransformerEncoder,
    TimmImageEncoder,
)
from mmctx.layers import lengths_to_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def test_everything_builds_and_runs_without_network(tiny: dict, tmp_path: Path, no_network: list) -> None:
    import socket

    with pytest.raises(OSError, match="blocked"):  # the block is real
        socket.create_connection(("huggingface.co", 443), timeout=1)
    no_network.clear()

    images, present = torch.rand(2, 3, 32, 32), torch.ones(2, dtype=torch.bool)
    wave, wave_mask = torch.randn(2, 4000), lengths_to_mask(torch.tensor([4000, 2500]), 4000)
    ids, ids_mask = torch.randint(1, 40, (2, 6)), torch.ones(2, 6, dtype=torch.bool)

    torch.manual_seed(0)
    timm_file = tmp_path / "resnet10t.safetensors"
    from safetensors.torch import save_file
    import timm

    save_file(timm.create_model("resnet10t").state_dict(), str(timm_file))
    TimmImageEncoder("resnet10t", out_dim=16, stage=2, pretrained=str(timm_file)).eval()(images, present)
    TextTransformerEncoder(40, dim=16, num_layers=1, num_heads=2)(ids, ids_mask)
    RNNAudioEncoder(n_mels=16, conv_channels=8, hidden_dim=16, num_layers=1, out_dim=16)(wave, wave_mask)
    for family in ("vit", "clip", "siglip", "convnext"):
        HFVisionEncoder(config=tiny[family]).eval()(images, present)
    for family in ("wav2vec2", "wav2vec2_layer", "hubert", "whisper"):
        HFSpeechEncoder(config=tiny[family]).eval()(wave, wave_mask)
    text = HFTextEncoder(config=tiny["bert"])
    text.backbone.save_pretrained(tmp_path / "bert")
    HFTextEncoder(model=str(tmp_path / "bert")).eval()(ids, ids_mask)
    vision = HFVisionEncoder(config=tiny["vit"])
    vision.backbone.save_pretrained(tmp_path / "vit")
    HFVisionEncoder(model=str(tmp_path / "vit")).eval()(images, present)
    speech = HFSpeechEncoder(config=tiny["whisper"])
    speech.backbone.save_pretrained(tmp_path / "whisper")
    HFSpeechEncoder(model=str(tmp_path / "whisper")).eval()(wave, wave_mask)
    assert no_network == [], f"tried the network: {no_network[:3]}"


@pytest.mark.usefixtures("hub_offline")
@pytest.mark.parametrize("cls", [HFTextEncoder, HFVisionEncoder, HFSpeechEncoder])
def test_made_up_hub_id_offline_says_how_to_fix_it(cls: type, no_network: list) -> None:
    with pytest.raises(OSError) as info:
        cls(model="mmctx-test/made-up-model-7c1e")
    message = str(info.value)
    assert message.startswith(f"{cls.__name__}: cannot load 'mmctx-test/made-up-model-7c1e'")
    for hint in ("local Hugging Face cache", "HF_HUB_OFFLINE=1", "HF_HOME", "local path"):
        assert hint in message
    assert len(message) < 700, "short"
    assert no_network == []


def test_a_missing_local_folder_is_not_taken_for_a_hub_id(tmp_path: Path) -> None:
    for cls in (HFTextEncoder, HFVisionEncoder, HFSpeechEncoder):
        with pytest.raises(ValueError, match="is not a local folder"):
            cls(model=str(tmp_path / "absent"))
