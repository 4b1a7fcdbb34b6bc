"""Media decoding on its own: images and audio read, checked, downmixed and resampled; every
bad file raises a MediaError with a stable kind and the file's name."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmctx.data.media import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MediaError,
    composite_on_white,
    downmix,
    image_transform,
    read_audio,
    read_image,
    resample,
    wav_truncation,
)


def test_read_image_rgb_and_transparency_on_white(tmp_path: Path, data_files: Any) -> None:
    path = data_files.image(tmp_path / "clear.png", size=(20, 12), mode="RGBA")  # fully transparent
    image = read_image(path)
    assert image.mode == "RGB" and image.size == (20, 12)
    assert np.asarray(image).min() == 255  # composited on white
    assert composite_on_white(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)


def test_image_transform_shape_and_normalisation() -> None:
    x = image_transform(8)(Image.new("RGB", (20, 12), (255, 0, 0)))
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    expected = [(c - m) / s for c, m, s in zip((1.0, 0.0, 0.0), IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "kind", "reason"),
    [
        ({"min_image_size": 13}, "image too small", "20x12 pixels, a side below min_image_size=13"),
        ({"max_image_pixels": 239}, "image too large", "20x12 = 240 pixels > max_image_pixels=239"),
    ],
)
def test_image_size_checks(tmp_path: Path, data_files: Any, kwargs: dict, kind: str, reason: str) -> None:
    path = data_files.image(tmp_path / "a.png", size=(20, 12))
    with pytest.raises(MediaError, match=reason) as error:
        read_image(path, **kwargs)
    assert error.value.kind == kind and str(path) in str(error.value)
    assert read_image(path, min_image_size=12, max_image_pixels=240).size == (20, 12)  # at the limits


def test_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(MediaError, match=r"cannot read image .*x\.png") as error:
        read_image(tmp_path / "x.png")
    assert error.value.kind == "unreadable image"
    again = pickle.loads(pickle.dumps(error.value))  # e.g. out of a DataLoader worker
    assert (type(again), str(again), again.kind) == (MediaError, str(error.value), error.value.kind)


def test_read_audio_downmix_and_resample(tmp_path: Path, data_files: Any) -> None:
    path = data_files.audio(tmp_path / "s.wav", samples=2205, rate=22050, channels=2, value=(0.5, 0.1))
    data, rate = read_audio(path)
    assert data.shape == (2205, 2) and data.dtype == np.float32 and rate == 22050
    wave = downmix(data)
    assert wave.shape == (2205,)
    torch.testing.assert_close(wave, torch.full((2205,), 0.3), atol=1e-3, rtol=0)
    assert resample(wave, 22050, 16000).shape == (1600,)


def test_bad_audio_kinds(tmp_path: Path, data_files: Any) -> None:
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    data_files.audio(tmp_path / "cut.wav", samples=8000)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "cut.wav").read_bytes()[:8000])
    nan = np.full(100, 0.1, dtype=np.float32)
    nan[3] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    for name, kind in [("text.wav", "unreadable audio"), ("cut.wav", "truncated audio"),
                       ("nan.wav", "non-finite audio"), ("empty.wav", "no audio samples")]:
        with pytest.raises(MediaError) as error:
            read_audio(tmp_path / name)
        assert error.value.kind == kind and name in str(error.value), (name, str(error.value))
    assert "declares 16000 bytes" in (wav_truncation(tmp_path / "cut.wav") or "")
    assert wav_truncation(tmp_path / "nan.wav") is None
