"""The default data set converted to shards (for ``configs/streaming.yaml``), on first use.

:func:`ensure_default_shards` generates the default data set if needed
(:func:`~mmctx.data.builtin.scenes.ensure_default_dataset`), then converts each split with
:func:`~mmctx.data.shards.write_shards` into ``<shard root>/{train,val,test}``, under the
cache protocol of :mod:`mmctx.data.builtin.cache`: written into a temporary folder and
renamed into place, stamped last with the default data's own stamp and the shard format, so
the shards are rebuilt exactly when the data they were made from, or the format, changed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mmctx.data.builtin import cache
from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.builtin.scenes import DEFAULT_CLASSES, SPLITS, default_data_root, ensure_default_dataset
from mmctx.data.shards import SHARDS_FORMAT, write_shards
from mmctx.data.tokenization import resolve_tokenizer

__all__ = ["SHARDS_DATASET", "default_shards_root", "ensure_default_shards"]

#: The stamp's ``dataset`` name of the default shards.
SHARDS_DATASET = "mmctx-default-shards"
#: Chunks of about 1 MB: the 3,000 training samples (about 15 kB each) make ~45 shards, so
#: the shard-by-shard order and the per-rank split have something to work with.
_CHUNK_BYTES = 1 << 20


def default_shards_root(data_root: str | Path | None = None) -> Path:
    """``<default data folder>-shards``."""
    data_root = Path(data_root).expanduser() if data_root else default_data_root()
    return data_root.parent / f"{data_root.name}-shards"


def ensure_default_shards(
    data_root: str | Path | None = None,
    output: str | Path | None = None,
    num_train: int = 3000,
    num_val: int = 500,
    num_test: int = 500,
    image_size: int = 64,
    sample_rate: int = 16000,
    seed: int = 0,
) -> Path:
    """The shard root of the default data set (``train``, ``val``, ``test`` folders with every
    modality, the labels and the captions), generated and converted unless up to date.

    Args:
        data_root: the default data's folder (None: :func:`default_data_root`).
        output: the shard root (None: :func:`default_shards_root`).
        num_train, num_val, num_test, image_size, sample_rate, seed: the default data's
            generation parameters (see :func:`~mmctx.data.builtin.scenes.ensure_default_dataset`).
    """
    data_root = Path(data_root).expanduser() if data_root else default_data_root()
    out = (Path(output).expanduser() if output else default_shards_root(data_root)).resolve()
    ensure_default_dataset(data_root, num_train, num_val, num_test, image_size, sample_rate, seed)
    source = cache.read_stamp(data_root.resolve())
    assert source is not None
    splits = [s for s in SPLITS if source["counts"].get(s, 0) > 0]

    def up_to_date() -> bool:
        stamp = cache.read_stamp(out)
        return (
            stamp is not None
            and stamp.get("dataset") == SHARDS_DATASET
            and stamp.get("format") == SHARDS_FORMAT
            and stamp.get("source") == {k: source[k] for k in ("version", "params", "assets")}
            and all((out / s / "index.json").is_file() for s in splits)
        )

    def convert() -> Path:
        tokenizer = resolve_tokenizer(str(default_tokenizer_path()))
        with cache.build_atomically(out, SHARDS_DATASET, [*SPLITS, cache.STAMP]) as tmp:
            for split in splits:
                write_shards(
                    data_root / f"{split}.jsonl",
                    tmp / split,
                    modalities=("image", "audio", "text"),
                    tokenizer=tokenizer,
                    classes=list(DEFAULT_CLASSES),
                    caption_field="caption",
                    chunk_bytes=_CHUNK_BYTES,
                )
            stamp = {"dataset": SHARDS_DATASET, "format": SHARDS_FORMAT, "source": {k: source[k] for k in ("version", "params", "assets")},
                     "data_root": str(data_root)}
            (tmp / cache.STAMP).write_text(json.dumps(stamp, indent=1))
        return out

    return cache.ensure(out, up_to_date, convert)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mmctx.data.builtin.shards``: the default data set as shards."""
    parser = argparse.ArgumentParser(prog="python -m mmctx.data.builtin.shards",
                                     description="Convert mmctx's default data set (generated if needed) to shards.")
    parser.add_argument("--root", default=None, help="the default data's folder (default: the cache)")
    parser.add_argument("--output", default=None, help="the shard root (default: <root>-shards)")
    args = parser.parse_args(argv)
    print(f"default data shards in {ensure_default_shards(args.root, args.output)}")


if __name__ == "__main__":
    main()
