"""The Lightning data modules over manifests and over the default data set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mmctx.data import DefaultDataModule, MultimodalDataModule, load_tokenizer
from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.builtin.scenes import DEFAULT_CLASSES
from mmctx.data.manifest import ManifestError
from mmctx.types import MultimodalBatch

def test_default_datamodule_loaders(default_root: Path, small_data: dict[str, int]) -> None:
    dm = DefaultDataModule(
        root=str(default_root),
        **small_data,
        batch_size=16,
        num_workers=0,
        modalities=["image", "audio", "text"],
    )
    assert dm.num_classes == 32 and dm.classes == DEFAULT_CLASSES and dm.classes[:2] == ["dog", "cat"]
    assert dm.vocab_size == load_tokenizer(default_tokenizer_path()).vocab_size and dm.pad_id == 0
    stamp = (default_root / "manifest_info.json").stat().st_mtime_ns
    dm.prepare_data()
    assert (default_root / "manifest_info.json").stat().st_mtime_ns == stamp  # up to date
    dm.setup("fit")
    dm.setup("test")
    sizes = {"train": 40, "val": 10, "test": 10}
    for split, loader in (
        ("train", dm.train_dataloader()),
        ("val", dm.val_dataloader()),
        ("test", dm.test_dataloader()),
    ):
        batches = list(loader)
        assert sum(len(b) for b in batches) == sizes[split]
        batch = batches[0]
        assert isinstance(batch, MultimodalBatch)
        assert set(batch.inputs) == {"image", "audio", "text"}
        assert batch.inputs["image"].data.shape[1:] == (3, 64, 64)
        assert batch.inputs["image"].mask.all()
        assert batch.targets["label"].dtype == torch.long
        assert batch.targets["label"].min() >= 0 and batch.targets["label"].max() < 32


def test_train_shuffle_is_seeded(default_root: Path, small_data: dict[str, int]) -> None:
    def first_ids(seed: int) -> list[str]:
        dm = DefaultDataModule(
            root=str(default_root),
            **small_data,
            batch_size=8,
            num_workers=0,
            modalities=["text"],
            seed=seed,
        )
        dm.setup("fit")
        return next(iter(dm.train_dataloader())).ids

    assert first_ids(0) == first_ids(0)
    assert first_ids(0) != first_ids(1)


def test_worker_processes(default_root: Path, small_data: dict[str, int]) -> None:
    dm = DefaultDataModule(root=str(default_root), **small_data, batch_size=10, num_workers=1)
    dm.setup("validate")
    loader = dm.val_dataloader()
    assert loader.persistent_workers
    assert len(next(iter(loader))) == 10


def test_init_generates_nothing(tmp_path: Path) -> None:
    dm = DefaultDataModule(root=str(tmp_path / "later"), num_train=4, num_val=2, num_test=2)
    assert dm.num_classes == 32 and dm.vocab_size > 5
    assert not (tmp_path / "later").exists()
    dm.setup("fit")  # generates lazily
    assert (tmp_path / "later" / "manifest_info.json").is_file()
    assert len(dm.datasets["train"]) == 4


def test_caption_task_fields(default_root: Path, small_data: dict[str, int]) -> None:
    dm = DefaultDataModule(
        root=str(default_root),
        **small_data,
        batch_size=4,
        num_workers=0,
        modalities=["audio"],
        audio_field="caption_audio",
        caption_field="caption",
        label_field=None,
    )
    assert dm.num_classes == 0
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch.inputs) == {"audio"} and set(batch.targets) == {"caption", "caption_mask"}
    assert (batch.targets["caption"][:, 0] == dm.bos_id).all()


def test_manifest_datamodule_classes(small_manifest: Callable[[list], Path]) -> None:
    path = small_manifest(
        [{"image": "images/a.png", "label": "dog"}, {"image": "images/a.png", "label": "cat"}]
    )
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["image"], num_workers=0)
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2  # sorted unique labels
    (path.parent / "classes.json").write_text(json.dumps(["dog", "cat", "bird"]))
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["image"], num_workers=0)
    assert dm.classes == ["dog", "cat", "bird"]  # classes.json wins
    dm = MultimodalDataModule(train_manifest=str(path), classes=["cat", "dog"], num_workers=0)
    assert dm.num_classes == 2
    assert dm.val_dataloader() == []  # no validation manifest: no validation

    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch.targets["label"].tolist()) == [0, 1]


def test_numeric_labels_sort_numerically(small_manifest: Callable[[list], Path]) -> None:
    path = small_manifest([{"image": "images/a.png", "label": n} for n in (10, 2, 1)])
    assert MultimodalDataModule(train_manifest=str(path), modalities=["image"]).classes == [
        "1",
        "2",
        "10",
    ]


def test_bad_manifest_fails_at_setup(small_manifest: Callable[[list], Path]) -> None:
    path = small_manifest(
        [{"image": "images/a.png", "label": "cat"}, {"image": "images/b.png", "label": "cat"}]
    )
    dm = MultimodalDataModule(train_manifest=str(path), modalities=["image"], classes=["cat"])
    with pytest.raises(ManifestError, match=r"train\.jsonl:2: field 'image': file not found"):
        dm.setup("fit")


def test_fits_with_lightning(default_root: Path, small_data: dict[str, int]) -> None:
    """A Lightning Trainer drives the data module: it trains on its batches (the weights move)
    and validates on its validation split."""
    import lightning as L

    seen: dict[str, list[int]] = {"train": [], "val": []}

    class Probe(L.LightningModule):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, num_classes)

        def _loss(self, batch: MultimodalBatch) -> torch.Tensor:
            features = batch.inputs["image"].data.mean(dim=(2, 3))  # (B, 3)
            return torch.nn.functional.cross_entropy(self.linear(features), batch.targets["label"])

        def training_step(self, batch: MultimodalBatch, index: int) -> torch.Tensor:
            seen["train"].append(len(batch))
            return self._loss(batch)

        def validation_step(self, batch: MultimodalBatch, index: int) -> None:
            seen["val"].append(len(batch))
            self.log("val_loss", self._loss(batch), batch_size=len(batch))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = DefaultDataModule(root=str(default_root), **small_data, batch_size=8, num_workers=0)
    model = Probe(dm.num_classes)
    before = model.linear.weight.detach().clone()
    trainer = L.Trainer(
        fast_dev_run=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished and trainer.global_step == 2
    assert seen == {"train": [8, 8], "val": [8, 2]}  # 2 training batches; the 10 validation samples
    assert not torch.equal(model.linear.weight, before)  # the optimizer stepped on real batches
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_label_unseen_in_training_is_an_error_unless_labels_from_data(
    small_manifest: Callable[[list], Path], data_files
) -> None:
    path = small_manifest([{"image": "images/a.png", "label": "dog"}, {"image": "images/a.png", "label": "cat"}])
    val = data_files.manifest(path.parent / "val.jsonl", [{"image": "images/a.png", "label": label}
                                                           for label in ("cat", "cow", "dog", "ant")])
    kwargs = dict(train_manifest=str(path), val_manifest=str(val), modalities=["image"], num_workers=0)
    for on_error in ("raise", "skip"):  # a label is not a bad row to drop
        with pytest.raises(ManifestError, match=r"val\.jsonl:2: field 'label': label 'cow' is not among the "
                                                r"training labels \['cat', 'dog'\]") as info:
            MultimodalDataModule(**kwargs, on_error=on_error).num_classes
        assert info.value.kind == "unknown label" and "labels_from_data: true" in str(info.value)
        assert "['ant', 'cow']" in str(info.value)

    dm = MultimodalDataModule(**kwargs, labels_from_data=True, batch_size=8)
    assert dm.classes == ["ant", "cat", "cow", "dog"]
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert sorted(train.targets["label"].tolist()) == [1, 3]  # cat, dog in the union's order
    assert next(iter(dm.val_dataloader())).targets["label"].tolist() == [1, 2, 3, 0]

    # no train manifest and no class list: the classes cannot be the model's
    with pytest.raises(ManifestError, match="no class list and no train_manifest") as info:
        MultimodalDataModule(test_manifest=str(val), modalities=["image"]).classes
    assert info.value.kind == "no classes"
    dm = MultimodalDataModule(test_manifest=str(val), modalities=["image"], labels_from_data=True)
    assert dm.classes == ["ant", "cat", "cow", "dog"]
    assert MultimodalDataModule(test_manifest=str(val), modalities=["image"], classes=["ant", "cat", "cow", "dog"]
                                ).num_classes == 4
