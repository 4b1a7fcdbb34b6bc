"""Data: loading the user's data, the built-in generated data sets, and the data modules.

- generic loading: JSONL manifests (:mod:`~mmctx.data.manifest`), COCO-style caption
  files (:mod:`~mmctx.data.coco`), media decoding (:mod:`~mmctx.data.media`), collation,
  tokenization, augmentation, samplers and loaders, and sharded streaming data
  (:mod:`~mmctx.data.shards`);
- :mod:`mmctx.data.builtin`: the generated data sets (pictogram scenes, long-range task),
  the asset pack and the cache protocol; they build on the generic code, never the reverse;
- :mod:`~mmctx.data.datamodules`: every Lightning data module (the only Lightning import).

Names are imported lazily (PEP 562), so ``import mmctx.data`` stays light and only the data
modules pull in Lightning.
"""

from __future__ import annotations

from mmctx.data._lazy import lazy_exports

#: Public name → module that defines it (relative to this package); listed once.
_EXPORTS: dict[str, str] = {
    # generic loading
    "IMAGENET_MEAN": "media",
    "IMAGENET_STD": "media",
    "ManifestDataset": "manifest",
    "ManifestError": "manifest",
    "CocoCaptionCollate": "coco",
    "CocoCaptionDataset": "coco",
    "CocoImage": "coco",
    "image_folder": "coco",
    "read_coco_captions": "coco",
    "MultimodalCollate": "collate",
    "collate_multimodal": "collate",
    "TextTokenizer": "tokenization",
    "TokenizerTraining": "tokenization",
    "load_tokenizer": "tokenization",
    "resolve_tokenizer": "tokenization",
    "train_word_tokenizer": "tokenization",
    "Augmentation": "augment",
    "AudioAugment": "augment",
    "AugmentedDataset": "augment",
    "ImageAugment": "augment",
    "TextAugment": "augment",
    "InputEncoder": "inference",
    "SampleTransform": "sample_transform",
    "EpochDataLoader": "loaders",
    "GlobalBatchSampler": "samplers",
    # Lightning data modules
    "CocoCaptionDataModule": "datamodules",
    "DefaultDataModule": "datamodules",
    "LongRangeDataModule": "datamodules",
    "SpokenLongDataModule": "datamodules",
    "MultimodalDataModule": "datamodules",
    "StreamingDataModule": "datamodules",
    "DefaultStreamingDataModule": "datamodules",
    # sharded streaming data
    "ShardBatchSampler": "shards",
    "ShardDataset": "shards",
    "write_shards": "shards",
    "ensure_default_shards": "builtin.shards",
    # built-in generated data sets
    "AssetPack": "builtin.asset_pack",
    "ObjectInfo": "builtin.asset_pack",
    "default_asset_dir": "builtin.asset_pack",
    "default_tokenizer_path": "builtin.asset_pack",
    "DEFAULT_CLASSES": "builtin.scenes",
    "default_data_root": "builtin.scenes",
    "ensure_default_dataset": "builtin.scenes",
    "generate_default_dataset": "builtin.scenes",
    "LONG_RANGE_CLASSES": "builtin.long_range",
    "ensure_long_range_dataset": "builtin.long_range",
    "generate_long_range_dataset": "builtin.long_range",
    "long_range_data_root": "builtin.long_range",
    "long_range_tokenizer": "builtin.long_range",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
