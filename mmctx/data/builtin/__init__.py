"""The built-in generated data sets, made locally from the asset pack committed in the package.

- :mod:`~mmctx.data.builtin.scenes`: the default data set, pictogram scenes with spoken
  questions ("what animals?"); ``python -m mmctx.data.builtin.scenes`` generates it;
- :mod:`~mmctx.data.builtin.long_range`: the long-range retrieval task (a key sentence
  hidden in a long document); ``python -m mmctx.data.builtin.long_range`` generates it;
- :mod:`~mmctx.data.builtin.asset_pack`: read access to ``assets/default/`` (pictograms,
  spoken words, the word-level tokenizer);
- :mod:`~mmctx.data.builtin.cache`: the on-disk cache protocol both generators follow
  (stamp, lock, atomic swap).

These modules import the generic code of :mod:`mmctx.data`, never the reverse; their
Lightning data modules are in :mod:`mmctx.data.datamodules`.
"""

from __future__ import annotations

from mmctx.data._lazy import lazy_exports

#: Public name → module that defines it (relative to this package); listed once.
_EXPORTS: dict[str, str] = {
    "AssetPack": "asset_pack",
    "ObjectInfo": "asset_pack",
    "default_asset_dir": "asset_pack",
    "default_tokenizer_path": "asset_pack",
    "DEFAULT_CLASSES": "scenes",
    "default_data_root": "scenes",
    "ensure_default_dataset": "scenes",
    "generate_default_dataset": "scenes",
    "LONG_RANGE_CLASSES": "long_range",
    "ensure_long_range_dataset": "long_range",
    "generate_long_range_dataset": "long_range",
    "long_range_data_root": "long_range",
    "long_range_tokenizer": "long_range",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
