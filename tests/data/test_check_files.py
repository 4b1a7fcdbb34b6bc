"""Up-front content check (check_files): bad file content of any split fails in setup, before
the first training step, naming manifest, line, field and reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmctx.data import CocoCaptionDataModule, MultimodalDataModule
from mmctx.data.manifest import ManifestError


def _folder(root: Path, data_files) -> Path:
    data_files.image(root / "images" / "good.png", size=(16, 16))
    data_files.audio(root / "audio" / "good.wav")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / "trunc.png")
    data = (root / "images" / "trunc.png").read_bytes()
    (root / "images" / "trunc.png").write_bytes(data[: len(data) // 2])  # noise: half the pixels missing
    (root / "audio" / "text.wav").write_text("this is not audio\n" * 20)
    good = {"image": "images/good.png", "audio": "audio/good.wav", "label": "dog"}
    rows = [{**good, "id": f"g{i}"} for i in range(3)]
    data_files.manifest(root / "train.jsonl", [*rows, {**good, "id": "bad", "image": "images/trunc.png"}])
    data_files.manifest(root / "val.jsonl", [*rows, {**good, "id": "bad", "audio": "audio/text.wav"}])
    data_files.manifest(root / "test.jsonl", rows)
    return root


def _module(root: Path, **kwargs) -> MultimodalDataModule:
    return MultimodalDataModule(train_manifest=str(root / "train.jsonl"), val_manifest=str(root / "val.jsonl"),
                                modalities=["image", "audio"], classes=["dog"], num_workers=0, batch_size=2, **kwargs)


def test_check_files_fails_in_setup(tmp_path: Path, data_files) -> None:
    root = _folder(tmp_path, data_files)
    with pytest.raises(ManifestError) as info:
        _module(root).setup("fit")  # check_files=None: on for small manifests
    error = info.value
    assert (error.kind, error.line, error.field) == ("unreadable image", 4, "image")
    assert "train.jsonl: 1 of 4 rows have a bad file (check_files)" in str(error)
    assert "train.jsonl:4: field 'image': cannot read image" in str(error) and "on_error: skip" in str(error)

    # the bad WAV of the validation split fails before training too
    data_files.manifest(root / "train.jsonl", [{"id": "g", "image": "images/good.png", "audio": "audio/good.wav",
                                                 "label": "dog"}])
    with pytest.raises(ManifestError, match=r"val\.jsonl:4: field 'audio': cannot read audio"):
        _module(root).setup("fit")
    # a test split is checked before training as well
    data_files.manifest(root / "val.jsonl", [{"id": "g", "image": "images/good.png", "label": "dog"}])
    data_files.manifest(root / "test.jsonl", [{"id": "t", "image": "images/trunc.png", "label": "dog"}])
    dm = MultimodalDataModule(train_manifest=str(root / "train.jsonl"), test_manifest=str(root / "test.jsonl"),
                              modalities=["image", "audio"], classes=["dog"], num_workers=0)
    with pytest.raises(ManifestError, match=r"test\.jsonl:1: field 'image'"):
        dm.setup("fit")


def test_check_files_off_finds_the_file_when_loaded(tmp_path: Path, data_files, monkeypatch) -> None:
    root = _folder(tmp_path, data_files)
    dm = _module(root, check_files=False)
    dm.setup("fit")  # nothing decoded
    with pytest.raises(ManifestError, match="cannot read image"):
        list(dm.train_dataloader())
    # auto: off above the size limit
    monkeypatch.setattr("mmctx.data.datamodules.CHECK_FILES_MAX_ROWS", 3)
    _module(root).setup("fit")
    with pytest.raises(ManifestError):
        _module(root, check_files=True).setup("fit")
    # skip mode drops the bad rows instead
    dm = _module(root, on_error="skip", max_bad_fraction=0.5)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 3


def test_check_files_fails_before_the_first_training_step(tmp_path: Path, data_files) -> None:
    import lightning as L

    root = _folder(tmp_path, data_files)
    steps = []

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, batch_idx):
            steps.append(batch_idx)
            return self.w * batch.inputs["image"].data.mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    with pytest.raises(ManifestError, match="check_files"):
        trainer.fit(Tiny(), datamodule=_module(root))
    assert steps == []


def test_coco_check_files(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(root / "images" / "a.png")
    (root / "images" / "b.png").write_text("a text file saved as .png\n")
    data = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "annotations": [{"image_id": i, "caption": "a black square"} for i in (1, 2)]}
    (root / "train.json").write_text(json.dumps(data))
    kwargs = dict(train_file=str(root / "train.json"), image_dir=str(root / "images"), min_word_frequency=1,
                  num_workers=0, image_size=16)
    with pytest.raises(ManifestError, match=r"1 of 2 images cannot be decoded[\s\S]*images\[1\] \(id 2\)"):
        CocoCaptionDataModule(**kwargs).setup("fit")
    CocoCaptionDataModule(**kwargs, check_files=False).setup("fit")
