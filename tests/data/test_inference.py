"""InputEncoder: the inputs of a trained model outside the data modules, preprocessed exactly as
the data sets do (same files → same tensors), from a data module's inference_state()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmctx.data import CocoCaptionDataModule, DefaultDataModule, MultimodalDataModule
from mmctx.data.inference import InputEncoder

PRE = {"image_size": [24, 20], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic",
       "crop_pct": 0.875, "crop_mode": "center"}


def _folder(tmp_path: Path, data_files) -> Path:
    """Three rows: a photo-like RGB PNG, an RGBA PNG and a JPEG; a stereo 22.05 kHz clip longer
    than max_audio_seconds, a mono 16 kHz one; texts."""
    root = tmp_path / "d"
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA").save(root / "images" / "b.png")
    Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(root / "images" / "c.jpg")
    data_files.audio(root / "audio" / "a.wav", samples=22050, rate=22050, channels=2, value=(0.1, 0.3))
    data_files.audio(root / "audio" / "b.wav", samples=4000, rate=16000, value=0.2)
    rows = [
        {"id": "a", "image": "images/a.png", "audio": "audio/a.wav", "text": "what animals are there", "label": "x"},
        {"id": "b", "image": "images/b.png", "audio": "audio/b.wav", "text": "a dog and a cat", "label": "y"},
        {"id": "c", "image": "images/c.jpg", "text": "is there a bus", "label": "x"},
    ]
    data_files.manifest(root / "train.jsonl", rows)
    return root


@pytest.mark.parametrize("preprocessing", [None, PRE], ids=["default", "preprocessing"])
def test_input_encoder_equals_the_data_set(tmp_path: Path, data_files, preprocessing) -> None:
    root = _folder(tmp_path, data_files)
    dm = MultimodalDataModule(train_manifest=str(root / "train.jsonl"), modalities=["image", "audio", "text"],
                              train_tokenizer={"kind": "word"}, batch_size=3, num_workers=0,
                              image_size=32, max_audio_seconds=0.5, max_text_len=3, preprocessing=preprocessing)
    dm.setup("fit")
    state = json.loads(json.dumps(dm.inference_state()))  # JSON-able, as a checkpoint keeps it
    assert state["class_path"] == "mmctx.data.MultimodalDataModule" and state["classes"] == ["x", "y"]
    assert state["init_args"]["preprocessing"] == (None if preprocessing is None else {**PRE})
    encoder = InputEncoder.from_state(state)
    assert encoder.classes == ["x", "y"] and encoder.tokenizer.vocab_size == dm.vocab_size

    expected = dm._collate()([dm.datasets["train"][i] for i in range(3)])
    batch = encoder(images=[root / "images" / f for f in ("a.png", "b.png", "c.jpg")],
                    audio=[str(root / "audio" / "a.wav"), str(root / "audio" / "b.wav"), None],
                    texts=["what animals are there", "a dog and a cat", "is there a bus"])
    for name in ("image", "audio", "text"):
        assert torch.equal(batch.inputs[name].data, expected.inputs[name].data), name
        assert torch.equal(batch.inputs[name].mask, expected.inputs[name].mask), name
    size = (32, 32) if preprocessing is None else (24, 20)
    assert batch.inputs["image"].data.shape == (3, 3, *size)
    assert batch.inputs["audio"].data.shape[1] == 8000  # 0.5 s at 16 kHz, resampled and cut

    # in-memory inputs: a PIL image, a uint8 array, a (C, H, W) tensor; (array, rate) audio
    pil = Image.open(root / "images" / "a.png")
    array = np.array(pil)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    wave, rate = (np.stack([np.full(22050, 0.1), np.full(22050, 0.3)], axis=1), 22050)
    memory = encoder(images=[pil, array, tensor], audio=[(wave, rate)] * 3)
    for b in range(3):
        assert torch.equal(memory.inputs["image"].data[b], expected.inputs["image"].data[0])
    # the file holds 16-bit samples; the same values in float differ by the quantisation only
    assert torch.allclose(memory.inputs["audio"].data[0], expected.inputs["audio"].data[0], atol=1e-4)


def test_input_encoder_errors(tmp_path: Path, data_files) -> None:
    root = _folder(tmp_path, data_files)
    dm = MultimodalDataModule(train_manifest=str(root / "train.jsonl"), modalities=["image"], num_workers=0)
    encoder = InputEncoder.from_state(dm.inference_state())
    with pytest.raises(ValueError, match="different lengths"):
        encoder(images=[root / "images" / "a.png"], audio=[None, None])
    with pytest.raises(ValueError, match=r"reads \['image'\], not \['text'\]"):
        encoder(texts=["hello"])
    with pytest.raises(ValueError, match="give images, audio or texts"):
        encoder()
    (root / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        encoder(images=[root / "bad.png"])


def test_default_datamodule_state(default_root: Path, small_data: dict[str, int]) -> None:
    dm = DefaultDataModule(root=str(default_root), **small_data, num_workers=0, batch_size=4,
                           modalities=["image", "audio", "text"])
    dm.setup("fit")
    state = dm.inference_state()
    assert state["class_path"] == "mmctx.data.DefaultDataModule"
    assert "image_field" not in state["init_args"]  # only arguments DefaultDataModule takes
    encoder = InputEncoder.from_state(state)
    ds = dm.datasets["train"]
    row = ds.rows[0]
    batch = encoder(images=[row.image], audio=[row.audio], texts=[row.text])
    item = ds[0]
    for name in ("image", "audio", "text"):
        assert torch.equal(batch.inputs[name].data[0], item[name]), name


def test_coco_state(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(root / "images" / "p.jpg")
    data = {"images": [{"id": 1, "file_name": "p.jpg"}],
            "annotations": [{"image_id": 1, "caption": "a noisy picture"}]}
    (root / "train.json").write_text(json.dumps(data))
    dm = CocoCaptionDataModule(train_file=str(root / "train.json"), image_dir=str(root / "images"),
                               min_word_frequency=1, image_size=40, num_workers=0, preprocessing=PRE)
    dm.setup("fit")
    state = dm.inference_state()
    assert state["class_path"] == "mmctx.data.CocoCaptionDataModule" and state["classes"] is None
    encoder = InputEncoder.from_state(json.loads(json.dumps(state)))
    batch = encoder(images=[root / "images" / "p.jpg"])
    assert torch.equal(batch.inputs["image"].data[0], dm.datasets["train"][0]["image"])
    assert encoder.tokenizer.decode(encoder.tokenizer.encode("a noisy picture")) == "a noisy picture"
