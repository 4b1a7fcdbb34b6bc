"""Loading manifest items and collating them into a MultimodalBatch."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.collate import MultimodalCollate, collate_multimodal
from mmctx.data.manifest import ManifestDataset
from mmctx.data.media import IMAGENET_MEAN, IMAGENET_STD
from mmctx.data.tokenization import TextTokenizer, load_tokenizer
from mmctx.types import MultimodalBatch

CLASSES = ["cat", "dog"]
ManifestWriter = Callable[[list], Path]


@pytest.fixture
def tokenizer() -> TextTokenizer:
    return load_tokenizer(default_tokenizer_path())


def dataset(
    path: Path,
    tokenizer: TextTokenizer,
    modalities: Sequence[str] = ("text", "image", "audio"),
    **kwargs: Any,
) -> ManifestDataset:
    kwargs.setdefault("classes", CLASSES)
    return ManifestDataset(path, list(modalities), tokenizer=tokenizer, **kwargs)


def test_shapes_dtypes_and_masks(
    small_manifest: Callable[[list], Path], data_files: Any, tokenizer: TextTokenizer
) -> None:
    root = small_manifest([]).parent
    data_files.audio(root / "audio" / "long.wav", samples=3200)
    path = small_manifest(
        [
            {
                "id": "full",
                "image": "images/a.png",
                "audio": "audio/long.wav",
                "text": "two dogs and a cat",
                "label": "dog",
            },
            {"id": "no-image", "audio": "audio/a.wav", "text": "a cat", "label": "cat"},
            {
                "id": "no-audio",
                "image": "images/a.png",
                "text": "how many animals",
                "label": "cat",
                "audio": None,
            },
        ]
    )
    data = dataset(path, tokenizer, image_size=16)
    batch = collate_multimodal([data[i] for i in range(3)], pad_id=tokenizer.pad_id)
    assert isinstance(batch, MultimodalBatch) and len(batch) == 3
    assert batch.ids == ["full", "no-image", "no-audio"]
    assert batch.meta["source"] == ["train.jsonl:1", "train.jsonl:2", "train.jsonl:3"]

    text = batch.inputs["text"]
    assert text.data.dtype == torch.long and text.data.shape == (3, 5)
    assert text.mask.tolist() == [
        [True] * 5,
        [True, True, False, False, False],
        [True, True, True, False, False],
    ]
    assert (text.data[~text.mask] == tokenizer.pad_id).all()
    assert tokenizer.decode(text.data[0]) == "two dogs and a cat"

    image = batch.inputs["image"]
    assert image.data.shape == (3, 3, 16, 16) and image.data.dtype == torch.float32
    assert image.mask.tolist() == [True, False, True]
    assert (image.data[1] == 0).all()
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)  # normalised white
    torch.testing.assert_close(image.data[0].mean(dim=(1, 2)), white)

    audio = batch.inputs["audio"]
    assert audio.data.shape == (3, 3200) and audio.data.dtype == torch.float32
    assert audio.mask.sum(dim=1).tolist() == [3200, 1600, 0]
    assert (audio.data[~audio.mask] == 0).all()

    assert batch.targets["label"].dtype == torch.long
    assert batch.targets["label"].tolist() == [1, 0, 0]


def test_modality_absent_from_every_row_is_an_absent_key(
    small_manifest: Callable[[list], Path], tokenizer: TextTokenizer
) -> None:
    path = small_manifest(
        [{"image": "images/a.png", "label": "cat"}, {"image": "images/a.png", "label": "dog"}]
    )
    data = dataset(path, tokenizer)
    batch = MultimodalCollate(tokenizer.pad_id)([data[0], data[1]])
    assert set(batch.inputs) == {"image"}
    assert batch.ids == ["train.jsonl:1", "train.jsonl:2"]  # no id field: file:line


def test_unlabelled_rows_give_no_targets(
    small_manifest: Callable[[list], Path], tokenizer: TextTokenizer
) -> None:
    path = small_manifest([{"image": "images/a.png"}])
    data = dataset(path, tokenizer, classes=None)
    assert data.classes == [] and not data.has_labels
    assert collate_multimodal([data[0]], pad_id=0).targets == {}


@pytest.mark.parametrize(
    ("rate", "channels", "samples", "expected"),
    [
        (8000, 2, 4000, 8000),
        (22050, 1, 22050, 16000),
        (16000, 2, 1234, 1234),
        (44100, 2, 4410, 1600),
    ],
)
def test_downmix_and_resampling(
    small_manifest: ManifestWriter,
    data_files: Any,
    tokenizer: TextTokenizer,
    rate: int,
    channels: int,
    samples: int,
    expected: int,
) -> None:
    root = small_manifest([]).parent
    values = (0.5, 0.1) if channels == 2 else (0.3,)
    data_files.audio(
        root / "audio" / "x.wav", samples=samples, rate=rate, channels=channels, value=values
    )
    path = small_manifest([{"audio": "audio/x.wav", "label": "cat"}])
    wave = dataset(path, tokenizer, modalities=["audio"])[0]["audio"]
    assert wave.shape == (expected,) and wave.dtype == torch.float32
    middle = wave[expected // 4 : 3 * expected // 4]  # away from resampling edge effects
    torch.testing.assert_close(middle, torch.full_like(middle, 0.3), atol=2e-3, rtol=0)


def test_audio_truncated_to_max_seconds(
    small_manifest: ManifestWriter,
    data_files: Any,
    tokenizer: TextTokenizer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = small_manifest([]).parent
    data_files.audio(root / "audio" / "long.wav", samples=16000)
    path = small_manifest(
        [{"audio": "audio/long.wav", "label": "cat"}, {"audio": "audio/long.wav", "label": "dog"}]
    )
    data = dataset(path, tokenizer, modalities=["audio"], max_audio_seconds=0.25)
    with caplog.at_level("WARNING"):
        assert data[0]["audio"].shape == (4000,)
        assert data[1]["audio"].shape == (4000,)
    assert sum("truncated" in r.message for r in caplog.records) == 1  # logged once


def test_text_truncated_to_max_len(
    small_manifest: ManifestWriter, tokenizer: TextTokenizer
) -> None:
    path = small_manifest([{"text": "a dog and a cat and a cow", "label": "cat"}])
    assert dataset(path, tokenizer, modalities=["text"], max_text_len=3)[0][
        "text"
    ].tolist() == tokenizer.encode("a dog and")


def test_transparent_image_on_white(
    small_manifest: ManifestWriter, data_files: Any, tokenizer: TextTokenizer
) -> None:
    root = small_manifest([]).parent
    data_files.image(
        root / "images" / "clear.png", color=(0, 0, 0), mode="RGBA"
    )  # fully transparent black
    path = small_manifest([{"image": "images/clear.png", "label": "cat"}])
    image = dataset(path, tokenizer, modalities=["image"], image_size=8)[0]["image"]
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(image.mean(dim=(1, 2)), white)


def test_caption_targets(small_manifest: ManifestWriter, tokenizer: TextTokenizer) -> None:
    path = small_manifest(
        [
            {"image": "images/a.png", "caption": "two dogs"},
            {"image": "images/a.png", "caption": "a cat , a bus and a rose"},
        ]
    )
    data = dataset(path, tokenizer, modalities=["image"], classes=None, caption_field="caption")
    batch = collate_multimodal([data[0], data[1]], pad_id=tokenizer.pad_id)
    caption, mask = batch.targets["caption"], batch.targets["caption_mask"]
    assert caption.shape == mask.shape == (2, 10)
    assert caption[0, :4].tolist() == [
        tokenizer.bos_id,
        *tokenizer.encode("two dogs"),
        tokenizer.eos_id,
    ]
    assert mask.sum(dim=1).tolist() == [4, 10]
    assert tokenizer.decode(caption[1]) == "a cat , a bus and a rose"
    assert batch.meta["caption_text"] == ["two dogs", "a cat , a bus and a rose"]


def test_collate_errors() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate_multimodal([], pad_id=0)
    items = [
        {"id": "a", "label": 1, "image": torch.zeros(3, 4, 4)},
        {"id": "b", "image": torch.zeros(3, 4, 4)},
    ]
    with pytest.raises(ValueError, match=r"'label'.*\['b'\]"):
        collate_multimodal(items, pad_id=0)
    items = [{"id": "a", "image": torch.zeros(3, 4, 4)}, {"id": "b", "image": torch.zeros(3, 5, 5)}]
    with pytest.raises(ValueError, match="different shapes"):
        collate_multimodal(items, pad_id=0)


def test_collate_pickles() -> None:
    collate = pickle.loads(pickle.dumps(MultimodalCollate(pad_id=7)))
    batch = collate(
        [{"id": "a", "text": torch.tensor([5])}, {"id": "b", "text": torch.tensor([5, 6])}]
    )
    assert batch.inputs["text"].data.tolist() == [[5, 7], [5, 6]]


def test_batch_moves_keep_integer_dtypes(
    small_manifest: ManifestWriter, tokenizer: TextTokenizer
) -> None:
    path = small_manifest([{"image": "images/a.png", "text": "a dog", "label": "dog"}])
    data = dataset(path, tokenizer)
    batch = collate_multimodal([data[0]], pad_id=0).to(torch.float64)
    assert batch.inputs["image"].data.dtype == torch.float64
    assert (
        batch.inputs["text"].data.dtype == torch.long and batch.targets["label"].dtype == torch.long
    )
