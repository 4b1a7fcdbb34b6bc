"""Data: manifest data sets, collation, tokenization, data modules and the default data set.

Names are imported lazily (PEP 562), so ``import mmctx.data`` stays light and only
:class:`MultimodalDataModule` / :class:`DefaultDataModule` pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    # asset_pack
    "AssetPack",
    "ObjectInfo",
    "default_asset_dir",
    # augment
    "Augmentation",
    "AudioAugment",
    "AugmentedDataset",
    "EpochDataLoader",
    "ImageAugment",
    "TextAugment",
    # coco
    "CocoCaptionCollate",
    "CocoCaptionDataModule",
    "CocoCaptionDataset",
    "CocoImage",
    "image_folder",
    "read_coco_captions",
    "train_word_tokenizer",
    # collate
    "MultimodalCollate",
    "collate_multimodal",
    # datamodule
    "DefaultDataModule",
    "MultimodalDataModule",
    # default_data
    "DEFAULT_CLASSES",
    "default_data_root",
    "ensure_default_dataset",
    "generate_default_dataset",
    # long_range
    "LONG_RANGE_CLASSES",
    "LongRangeDataModule",
    "ensure_long_range_dataset",
    "generate_long_range_dataset",
    "long_range_data_root",
    "long_range_tokenizer",
    # manifest
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ManifestDataset",
    "ManifestError",
    # samplers
    "GlobalBatchSampler",
    # tokenization
    "TextTokenizer",
    "default_tokenizer_path",
    "load_tokenizer",
]

_SOURCES: dict[str, str] = {
    "AssetPack": "asset_pack",
    "ObjectInfo": "asset_pack",
    "default_asset_dir": "asset_pack",
    "Augmentation": "augment",
    "AudioAugment": "augment",
    "AugmentedDataset": "augment",
    "EpochDataLoader": "augment",
    "ImageAugment": "augment",
    "TextAugment": "augment",
    "CocoCaptionCollate": "coco",
    "CocoCaptionDataModule": "coco",
    "CocoCaptionDataset": "coco",
    "CocoImage": "coco",
    "image_folder": "coco",
    "read_coco_captions": "coco",
    "train_word_tokenizer": "coco",
    "MultimodalCollate": "collate",
    "collate_multimodal": "collate",
    "DefaultDataModule": "datamodule",
    "MultimodalDataModule": "datamodule",
    "DEFAULT_CLASSES": "default_data",
    "default_data_root": "default_data",
    "ensure_default_dataset": "default_data",
    "generate_default_dataset": "default_data",
    "LONG_RANGE_CLASSES": "long_range",
    "LongRangeDataModule": "long_range",
    "ensure_long_range_dataset": "long_range",
    "generate_long_range_dataset": "long_range",
    "long_range_data_root": "long_range",
    "long_range_tokenizer": "long_range",
    "IMAGENET_MEAN": "manifest",
    "IMAGENET_STD": "manifest",
    "ManifestDataset": "manifest",
    "ManifestError": "manifest",
    "GlobalBatchSampler": "samplers",
    "TextTokenizer": "tokenization",
    "default_tokenizer_path": "tokenization",
    "load_tokenizer": "tokenization",
}

if TYPE_CHECKING:
    from mmctx.data.asset_pack import AssetPack, ObjectInfo, default_asset_dir
    from mmctx.data.augment import (
        Augmentation,
        AudioAugment,
        AugmentedDataset,
        EpochDataLoader,
        ImageAugment,
        TextAugment,
    )
    from mmctx.data.coco import (
        CocoCaptionCollate,
        CocoCaptionDataModule,
        CocoCaptionDataset,
        CocoImage,
        image_folder,
        read_coco_captions,
        train_word_tokenizer,
    )
    from mmctx.data.collate import MultimodalCollate, collate_multimodal
    from mmctx.data.datamodule import DefaultDataModule, MultimodalDataModule
    from mmctx.data.default_data import (
        DEFAULT_CLASSES,
        default_data_root,
        ensure_default_dataset,
        generate_default_dataset,
    )
    from mmctx.data.long_range import (
        LONG_RANGE_CLASSES,
        LongRangeDataModule,
        ensure_long_range_dataset,
        generate_long_range_dataset,
        long_range_data_root,
        long_range_tokenizer,
    )
    from mmctx.data.manifest import IMAGENET_MEAN, IMAGENET_STD, ManifestDataset, ManifestError
    from mmctx.data.samplers import GlobalBatchSampler
    from mmctx.data.tokenization import TextTokenizer, default_tokenizer_path, load_tokenizer


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
