"""Training-time augmentation: shapes and dtypes kept, reproducible per (seed, epoch, sample),
training split only; the label-fraction subset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmctx.data import DefaultDataModule
from mmctx.data.augment import Augmentation, AudioAugment, AugmentedDataset, ImageAugment, TextAugment
from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.builtin.scenes import DEFAULT_CLASSES
from mmctx.data.manifest import ManifestDataset
from mmctx.data.tokenization import load_tokenizer

FULL = Augmentation(
    text=TextAugment(delete_prob=0.2, swap_prob=0.2, char_noise_prob=0.05),
    image=ImageAugment(crop_scale_min=0.7, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, rotation_degrees=10),
    audio=AudioAugment(gain_db=6, snr_db=(10.0, 20.0), time_mask_seconds=0.1, freq_mask_bins=20),
    seed=0,
)


def dataset(root: Path) -> ManifestDataset:
    return ManifestDataset(root / "train.jsonl", ["image", "audio", "text"], tokenizer=load_tokenizer(default_tokenizer_path()),
                           classes=DEFAULT_CLASSES)


def test_each_transform_keeps_shapes_and_dtypes_and_changes_the_data():
    torch.manual_seed(0)
    image = torch.randn(3, 32, 32)
    out = FULL.image(image)
    assert out.shape == image.shape and out.dtype == image.dtype and not torch.allclose(out, image)
    wave = 0.1 * torch.randn(8000)
    out = FULL.audio(wave)
    assert out.shape == wave.shape and out.dtype == wave.dtype and not torch.allclose(out, wave)
    faster = AudioAugment(speed=(1.25, 1.25))(wave)
    assert faster.dtype == wave.dtype and faster.shape[0] == pytest.approx(8000 / 1.25, abs=2)
    text = "a dog , an apple and a bus"
    noisy = [TextAugment(delete_prob=0.3, swap_prob=0.3)(text) for _ in range(10)]
    assert any(n != text for n in noisy) and all(n.split() for n in noisy)
    assert all(sorted(n.split()) != [] and set(n.split()) <= set(text.split()) for n in noisy)
    assert TextAugment()(text) == text and ImageAugment()(image) is image  # all off: untouched
    with pytest.raises(ValueError, match="hue"):
        ImageAugment(hue=0.9)


def test_augmented_items_are_reproducible_per_seed_epoch_and_sample(default_root):
    base = dataset(default_root)
    a, b = AugmentedDataset(base, FULL), AugmentedDataset(base, FULL)
    first, again = a[3], b[3]
    plain = base[3]
    for key in ("image", "audio", "text"):
        assert first[key].dtype == plain[key].dtype
        assert torch.equal(first[key], again[key]), key  # same seed, epoch and index
    assert first["image"].shape == plain["image"].shape and first["audio"].shape == plain["audio"].shape
    assert not torch.equal(first["image"], plain["image"]) and not torch.equal(first["audio"], plain["audio"])
    assert not torch.equal(a[4]["image"], base[4]["image"])
    b.set_epoch(1)
    assert not torch.equal(b[3]["image"], first["image"])  # a new epoch draws anew
    other = AugmentedDataset(base, Augmentation(image=FULL.image, seed=1))
    assert not torch.equal(other[3]["image"], first["image"])
    assert torch.equal(other[3]["audio"], plain["audio"])  # audio not configured: untouched
    # the augmentation does not disturb torch's global RNG
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a[0]
    assert torch.equal(torch.rand(3), expected)


def _by_id(loader) -> dict[str, torch.Tensor]:
    return {i: img for batch in loader for i, img in zip(batch.ids, batch.inputs["image"].data)}


def test_augmentation_is_for_training_only_and_epochs_differ(default_root, small_data):
    kwargs = dict(root=str(default_root), **small_data, batch_size=8, num_workers=0, modalities=["image", "audio"])
    plain = DefaultDataModule(**kwargs)
    augmented = DefaultDataModule(**kwargs, augment=Augmentation(image=FULL.image, audio=FULL.audio))
    for dm in (plain, augmented):
        dm.setup("fit")
        dm.setup("test")
    for split in ("val_dataloader", "test_dataloader", "predict_dataloader"):
        a, b = _by_id(getattr(plain, split)()), _by_id(getattr(augmented, split)())
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), split
    loader = augmented.train_dataloader()
    epoch0, epoch1 = _by_id(loader), _by_id(loader)
    clean = _by_id(plain.train_dataloader())
    assert epoch0.keys() == clean.keys() == epoch1.keys()
    assert all(not torch.equal(epoch0[k], clean[k]) for k in clean)
    assert all(not torch.equal(epoch0[k], epoch1[k]) for k in clean)  # each pass draws anew
    rerun = DefaultDataModule(**kwargs, augment=Augmentation(image=FULL.image, audio=FULL.audio))
    rerun.setup("fit")
    again = _by_id(rerun.train_dataloader())
    assert all(torch.equal(epoch0[k], again[k]) for k in clean)  # a rerun repeats exactly


@pytest.mark.slow
def test_augmentation_does_not_depend_on_the_number_of_workers(default_root, small_data):
    kwargs = dict(root=str(default_root), **small_data, batch_size=8, modalities=["image"],
                  augment=Augmentation(image=FULL.image))
    results = []
    for workers in (0, 2):
        dm = DefaultDataModule(**kwargs, num_workers=workers)
        dm.setup("fit")
        loader = dm.train_dataloader()
        results.append((_by_id(loader), _by_id(loader)))  # two epochs (persistent workers)
    for epoch in range(2):
        a, b = results[0][epoch], results[1][epoch]
        assert all(torch.equal(a[k], b[k]) for k in a), f"epoch {epoch}"


def test_label_fraction_takes_a_fixed_seeded_subset(default_root, small_data):
    def train_ids(fraction: float, seed: int = 0) -> list[str]:
        dm = DefaultDataModule(root=str(default_root), **small_data, batch_size=8, num_workers=0,
                               modalities=["image"], label_fraction=fraction, seed=seed)
        dm.setup("fit")
        return sorted(i for batch in dm.train_dataloader() for i in batch.ids)

    tenth = train_ids(0.1)
    assert len(tenth) == 4 and len(set(tenth)) == 4
    assert tenth == train_ids(0.1)
    assert len(train_ids(1.0)) == 40
    with pytest.raises(ValueError, match="label_fraction"):
        train_ids(0.0)
