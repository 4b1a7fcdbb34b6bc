"""Sharded streaming data: a manifest converted to litdata chunks, read locally or from an
object store, preprocessed at read time exactly as the manifest path does.

Writing (:func:`write_shards`, or ``python -m mmctx.data.shards``): the rows of a
JSONL manifest are validated by :class:`~mmctx.data.manifest.ManifestDataset` (the same
checks, the same ``on_error`` / ``max_bad_fraction`` policy, every file decoded once), then
each kept row is written with litdata's ``BinaryWriter`` as one item::

    {"row": '{"id": ..., "line": ..., "text": ..., "label": "<name>", "caption": ...,
              "image": "<path in the manifest>", "audio": "<path in the manifest>"}',
     "image": <the image file's bytes, b"" when the row has none>,
     "audio": <the audio file's bytes, b"" when the row has none>}

The files are stored as they are on disk (PNG, JPEG, FLAC, WAV ...), never as decoded
tensors, so the shards stay as small as the data and a change of image size or sample rate
needs no reconversion. ``index.json`` (litdata's) also carries an ``"mmctx"`` entry: the
source manifest, the converted modalities and fields, the classes and what was skipped.

Reading (:class:`ShardDataset`): a map-style data set over ``litdata.StreamingDataset``
(random access by index; a chunk is fetched and cached when first read). Each item is turned
back into a manifest row whose files are the stored bytes and loaded by
:class:`~mmctx.data.manifest.ManifestSampleLoader`: the same decoding, checks, resizing,
resampling, truncation and tokenization as :class:`~mmctx.data.manifest.ManifestDataset`, so
a shard sample equals the manifest sample bit for bit (``source`` still names the manifest
line).

Order (:class:`ShardBatchSampler`): a :class:`~mmctx.data.samplers.GlobalBatchSampler` whose
epoch order is drawn shard by shard (chunks permuted, then the items of ``shuffle_window``
chunks at a time), so a reader streams a few chunks at a time instead of seeking across the
whole data set, while keeping the sampler's guarantees: the order depends on (seed, epoch)
only, a mid-epoch resume skips exactly the trained batches, and every DDP rank gets the same
number of batches whatever the shard sizes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from mmctx.data.manifest import ManifestDataset, ManifestError, ManifestSampleLoader, _Row
from mmctx.data.samplers import GlobalBatchSampler
from mmctx.data.tokenization import TextTokenizer
from mmctx.types import MODALITIES

__all__ = [
    "SHARDS_FORMAT",
    "ShardBatchSampler",
    "ShardDataset",
    "read_shards_info",
    "write_shards",
]

#: Version of the item layout above (``index.json["mmctx"]["format"]``).
SHARDS_FORMAT = 1
_INFO_KEY = "mmctx"


class _NamedBytes(io.BytesIO):
    """A stored file's bytes, named (for messages) by its path in the source manifest."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def write_shards(
    manifest: str | Path,
    output_dir: str | Path,
    modalities: Sequence[str] = ("image", "audio", "text"),
    tokenizer: TextTokenizer | None = None,
    classes: list[str] | None = None,
    label_field: str | None = "label",
    text_field: str = "text",
    image_field: str = "image",
    audio_field: str = "audio",
    caption_field: str | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    max_bad_fraction: float = 0.05,
    min_image_size: int = 8,
    max_image_pixels: int = 50_000_000,
    allow_outside_root: bool = False,
    chunk_bytes: int | str = "64MB",
    chunk_size: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert a JSONL manifest into litdata shards in ``output_dir`` (a local folder; copy it
    to an object store with any tool, e.g. ``aws s3 sync``).

    The rows are validated and their files decoded once by
    :class:`~mmctx.data.manifest.ManifestDataset` with the given arguments (see there), so a
    bad row fails the conversion naming manifest, line, field and reason (``on_error="raise"``)
    or is dropped and counted (``"skip"``); only good rows are written.

    Args:
        manifest: the JSONL manifest.
        output_dir: folder to write ``index.json`` and the ``chunk-*.bin`` files into.
        modalities: the modalities to convert (a data module may load any subset of them).
        tokenizer: checks that every converted text gives tokens (needed when "text" is
            converted or ``caption_field`` is set); the texts are stored as text and
            tokenized when read, by the reading data module's tokenizer.
        classes: the class list (None: the sorted labels of the manifest).
        label_field, text_field, image_field, audio_field, caption_field: the manifest's
            fields, as for :class:`~mmctx.data.manifest.ManifestDataset`.
        on_error, max_bad_fraction, min_image_size, max_image_pixels, allow_outside_root:
            the bad-input policy, as for :class:`~mmctx.data.manifest.ManifestDataset`.
        chunk_bytes: target size of a chunk (litdata's ``chunk_bytes``: an int or "64MB").
        chunk_size: or a number of samples per chunk (overrides ``chunk_bytes``).
        overwrite: replace an existing ``output_dir``; otherwise a non-empty one is an error.

    Returns:
        The ``"mmctx"`` entry written into ``index.json`` (see :func:`read_shards_info`).

    Raises:
        ManifestError: a bad row with ``on_error="raise"``, or too many with ``"skip"``.
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False.
    """
    from litdata.streaming.writer import BinaryWriter

    manifest = Path(manifest)
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{output_dir}: not empty; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(output_dir)
    dataset = ManifestDataset(
        manifest,
        modalities,
        tokenizer=tokenizer,
        classes=classes,
        label_field=label_field,
        text_field=text_field,
        image_field=image_field,
        audio_field=audio_field,
        caption_field=caption_field,
        allow_outside_root=allow_outside_root,
        on_error=on_error,
        max_bad_fraction=max_bad_fraction,
        min_image_size=min_image_size,
        max_image_pixels=max_image_pixels,
    )
    dataset.check_files()  # "raise": decode every file now (with "skip" it was done when built)
    output_dir.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(
        str(output_dir), chunk_size=chunk_size, chunk_bytes=None if chunk_size else chunk_bytes
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="An item was larger than the target chunk size")
        for index, row in enumerate(dataset.rows):
            writer[index] = _item(row, dataset)
        writer.done()
    writer.merge(1)
    info = {
        "format": SHARDS_FORMAT,
        "manifest": manifest.name,
        "num_samples": len(dataset.rows),
        "modalities": list(dataset.modalities),
        "labels": dataset.has_labels,
        "captions": caption_field is not None,
        "classes": list(dataset.classes) if dataset.has_labels else None,
        "fields": {"image": image_field, "audio": audio_field, "text": text_field, "label": label_field,
                   "caption": caption_field},
        "patterns": _modality_patterns(dataset.rows),
        "total_rows": dataset.total_rows,
        "skipped": {kind: len(messages) for kind, messages in dataset.skipped.items()},
    }
    index_file = output_dir / "index.json"
    index = json.loads(index_file.read_text())
    index[_INFO_KEY] = info
    index_file.write_text(json.dumps(index))
    return info


def _modality_patterns(rows: Sequence[_Row]) -> dict[str, dict[str, int]]:
    """Which modalities the rows have: ``"image+text"`` → count and first line, so a reader
    finds rows with none of the modalities it asks for without reading them."""
    patterns: dict[str, dict[str, int]] = {}
    for row in rows:
        present = [m for m, value in (("image", row.image), ("audio", row.audio), ("text", row.text)) if value is not None]
        entry = patterns.setdefault("+".join(present), {"count": 0, "line": row.line})
        entry["count"] += 1
    return patterns


def _item(row: _Row, dataset: ManifestDataset) -> dict[str, Any]:
    """The litdata item of a validated row (see the module docstring)."""

    def relative(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return str(path.relative_to(dataset.root))
        except ValueError:  # allow_outside_root
            return str(path)

    meta = {
        "id": row.id,
        "line": row.line,
        "text": row.text,
        "label": dataset.classes[row.label] if row.label is not None else None,
        "caption": row.caption,
        "image": relative(row.image),
        "audio": relative(row.audio),
    }
    return {
        "row": json.dumps(meta),
        "image": row.image.read_bytes() if row.image is not None else b"",
        "audio": row.audio.read_bytes() if row.audio is not None else b"",
    }


def read_shards_info(index: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``"mmctx"`` entry of a shard folder's ``index.json`` (parsed), checked.

    Raises:
        ValueError: the folder was not written by :func:`write_shards`, or by a newer format.
    """
    info = index.get(_INFO_KEY)
    if not isinstance(info, dict):
        raise ValueError(
            f"{where}: index.json has no {_INFO_KEY!r} entry: not shards written by mmctx "
            "(convert a manifest with `python -m mmctx.data.shards MANIFEST OUT`)"
        )
    if info.get("format") != SHARDS_FORMAT:
        raise ValueError(f"{where}: shard format {info.get('format')!r}, this mmctx reads {SHARDS_FORMAT}")
    return info


class ShardDataset(Dataset):
    """Samples of a shard folder written by :func:`write_shards`, as the manifest data set
    gives them (same dict, same tensors; see :class:`~mmctx.data.manifest.ManifestDataset`).

    Shapes:
        - ``"image"``: (3, H, W) float; ``"audio"``: (S,) float32; ``"text"`` and
          ``"caption"``: (T,) long; ``"label"``: int (see ``ManifestDataset``).

    Args:
        input_dir: the shard folder: a local path or a URL litdata streams from
            (``s3://bucket/prefix``, ``gs://...``, ``azure://...``).
        modalities: which of the converted modalities to load.
        tokenizer: tokenizer of the texts (needed when "text" is loaded or ``captions``).
        classes: class names; a sample's label ``l`` maps to ``classes.index(l)``. None:
            the classes recorded in the shards.
        labels: load the labels (when the shards have them).
        captions: load the captions (the shards must have them).
        image_size, preprocessing, sample_rate, max_audio_seconds, max_text_len,
            min_image_size, max_image_pixels: as for ``ManifestDataset``.
        cache_dir: where litdata keeps a remote folder's ``index.json`` (samples are read as
            byte ranges, not cached; None: litdata's default folder).
        storage_options: options of the object store client (e.g. ``{"endpoint_url": ...}``
            for an S3-compatible server), passed to ``litdata.StreamingDataset``.

    Raises:
        ValueError: a folder without mmctx shards, a modality, labels or captions the shards
            do not have, or a label missing from ``classes``.
        ManifestError: samples with none of ``modalities`` (kind "no modality", as the
            manifest path; found from the shards' index, without reading the samples).
    """

    def __init__(
        self,
        input_dir: str | Path,
        modalities: Sequence[str],
        tokenizer: TextTokenizer | None = None,
        classes: list[str] | None = None,
        labels: bool = True,
        captions: bool = False,
        image_size: int = 64,
        preprocessing: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        min_image_size: int = 8,
        max_image_pixels: int = 50_000_000,
        cache_dir: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.input_dir = str(input_dir)
        self.cache_dir = cache_dir
        self.storage_options = storage_options
        self.modalities = tuple(modalities)
        self._stream_pid: int | None = None
        self._stream: Any = None
        stream = self.stream
        index = json.loads((Path(stream.input_dir.path) / "index.json").read_text())
        self.info = read_shards_info(index, self.input_dir)
        #: Samples per chunk, in index order (the sampler streams chunk by chunk).
        self.chunk_sizes = [int(chunk["chunk_size"]) for chunk in index["chunks"]]
        self.num_samples = sum(self.chunk_sizes)
        missing = [m for m in self.modalities if m not in self.info["modalities"]]
        if missing or not self.modalities or any(m not in MODALITIES for m in self.modalities):
            raise ValueError(
                f"{self.input_dir}: modalities {list(self.modalities)}: the shards hold {self.info['modalities']}"
                + (f" (not {missing})" if missing else "")
            )
        empty = {p: e for p, e in self.info["patterns"].items() if not set(p.split("+")) & set(self.modalities)}
        if empty:
            count = sum(e["count"] for e in empty.values())
            line = min(e["line"] for e in empty.values())
            raise ManifestError(
                f"{self.input_dir}: {count} sample(s) have none of the modalities {list(self.modalities)} (first: "
                f"{self.info['manifest']}:{line}); load more modalities, or convert without those rows",
                kind="no modality",
                line=line,
            )
        if captions and not self.info["captions"]:
            raise ValueError(f"{self.input_dir}: captions asked for, but the shards were converted without caption_field")
        if ("text" in self.modalities or captions) and tokenizer is None:
            raise ValueError(f"{self.input_dir}: a tokenizer is needed to load text")
        self.labels = labels and bool(self.info["labels"])
        self.captions = captions
        stored = self.info["classes"] or []
        self.classes: list[str] = list(classes) if classes is not None else list(stored)
        unknown = sorted(set(stored) - set(self.classes)) if self.labels else []
        if unknown:
            raise ValueError(f"{self.input_dir}: labels {unknown[:10]} of the shards are not among the classes {self.classes}")
        self._class_index = {name: i for i, name in enumerate(self.classes)}
        fields = self.info["fields"]
        #: The manifest path's per-row loader: decoding, checks and preprocessing in one place.
        self.loader = ManifestSampleLoader(
            Path(self.info["manifest"]),
            tokenizer,
            image_size=image_size,
            preprocessing=preprocessing,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            max_text_len=max_text_len,
            text_field=fields["text"],
            image_field=fields["image"],
            audio_field=fields["audio"],
            caption_field=fields["caption"] if captions else None,
            min_image_size=min_image_size,
            max_image_pixels=max_image_pixels,
        )

    @property
    def stream(self) -> Any:
        """This process's ``litdata.StreamingDataset`` (made again in each worker process)."""
        if self._stream is None or self._stream_pid != os.getpid():
            from litdata import StreamingDataset

            stream = StreamingDataset(self.input_dir, cache_dir=self.cache_dir, storage_options=self.storage_options)
            len(stream)  # loads index.json (downloads it for a remote folder)
            self._stream, self._stream_pid = stream, os.getpid()
        return self._stream

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"] = None  # litdata readers hold threads: each worker opens its own
        return state

    def __len__(self) -> int:
        return self.num_samples

    def row(self, index: int) -> _Row:
        """Sample ``index`` as a manifest row whose files are the stored bytes."""
        item = self.stream[index]
        meta = json.loads(item["row"])
        image = _NamedBytes(bytes(item["image"]), meta["image"]) if "image" in self.modalities and meta["image"] else None
        audio = _NamedBytes(bytes(item["audio"]), meta["audio"]) if "audio" in self.modalities and meta["audio"] else None
        text = meta["text"] if "text" in self.modalities else None
        label = self._class_index[meta["label"]] if self.labels and meta["label"] is not None else None
        caption = meta["caption"] if self.captions else None
        return _Row(int(meta["line"]), str(meta["id"]), image, audio, text, label, caption)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.loader(self.row(index))

    @property
    def ids(self) -> list[str]:
        """Every sample's id, in index order (reads every item's metadata)."""
        return [str(json.loads(self.stream[i]["row"])["id"]) for i in range(len(self))]


class ShardBatchSampler(GlobalBatchSampler):
    """A :class:`~mmctx.data.samplers.GlobalBatchSampler` whose epoch order goes shard by
    shard: the chunks are permuted with the (seed, epoch) generator, taken ``shuffle_window``
    at a time, and the items of each window permuted together. A reader thus streams about
    ``shuffle_window`` chunks at once (per rank), not the whole data set; a larger window
    mixes the data more. Everything else (global batches, DDP blocks, padding to equal batch
    counts, ``skip_batches`` for a mid-epoch resume) is the base class's.

    Args:
        chunk_sizes: samples in each chunk, in index order.
        batch_size: per-process batch size.
        seed: base seed of the shuffle.
        shuffle: shuffle (else index order).
        shuffle_window: chunks whose items are shuffled together (>= 1).
        num_replicas, rank: as for ``GlobalBatchSampler``.
    """

    def __init__(
        self,
        chunk_sizes: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_window: int = 4,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if shuffle_window < 1:
            raise ValueError(f"ShardBatchSampler: shuffle_window must be >= 1, got {shuffle_window}")
        super().__init__(sum(chunk_sizes), batch_size, seed, shuffle, num_replicas, rank)
        self.chunk_sizes = list(chunk_sizes)
        self.shuffle_window = shuffle_window
        starts = torch.tensor([0, *self.chunk_sizes]).cumsum(0)
        self._chunk_starts = starts[:-1].tolist()

    def epoch_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = self.epoch_generator()
        chunks = torch.randperm(len(self.chunk_sizes), generator=generator).tolist()
        order: list[int] = []
        for w in range(0, len(chunks), self.shuffle_window):
            window = torch.cat(
                [torch.arange(self.chunk_sizes[c]) + self._chunk_starts[c] for c in chunks[w : w + self.shuffle_window]]
            )
            order.extend(window[torch.randperm(len(window), generator=generator)].tolist())
        return order


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mmctx.data.shards MANIFEST OUTPUT_DIR [...]``: convert a manifest to shards
    (the default data set: ``python -m mmctx.data.builtin.shards``)."""
    parser = argparse.ArgumentParser(
        prog="python -m mmctx.data.shards",
        description="Convert a JSONL manifest into litdata shards (see docs/streaming.md). The default data set: "
        "python -m mmctx.data.builtin.shards",
    )
    parser.add_argument("manifest")
    parser.add_argument("output_dir")
    parser.add_argument("--modalities", nargs="+", default=["image", "audio", "text"], choices=list(MODALITIES))
    parser.add_argument("--tokenizer", default=None,
                        help="checks that the texts tokenize (hub id, folder or tokenizer.json); needed with text")
    parser.add_argument("--label-field", default="label", help="'none' for no labels")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--image-field", default="image")
    parser.add_argument("--audio-field", default="audio")
    parser.add_argument("--caption-field", default=None)
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    parser.add_argument("--max-bad-fraction", type=float, default=0.05)
    parser.add_argument("--chunk-bytes", default="64MB")
    parser.add_argument("--chunk-size", type=int, default=None, help="samples per chunk (instead of --chunk-bytes)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    tokenizer = None
    if args.tokenizer is not None:
        from mmctx.data.tokenization import resolve_tokenizer

        tokenizer = resolve_tokenizer(args.tokenizer)
    try:
        info = _convert(args, tokenizer)
    except (FileExistsError, ValueError) as error:  # ManifestError too: one short message, no traceback
        parser.exit(2, f"python -m mmctx.data.shards: error: {error}\n")
    skipped = sum(info["skipped"].values())
    print(f"{args.output_dir}: {info['num_samples']} samples of {args.manifest}"
          + (f" ({skipped} bad rows skipped: {info['skipped']})" if skipped else ""))


def _convert(args: argparse.Namespace, tokenizer: TextTokenizer | None) -> dict[str, Any]:
    return write_shards(
        args.manifest,
        args.output_dir,
        modalities=args.modalities,
        tokenizer=tokenizer,
        label_field=None if args.label_field == "none" else args.label_field,
        text_field=args.text_field,
        image_field=args.image_field,
        audio_field=args.audio_field,
        caption_field=args.caption_field,
        on_error=args.on_error,
        max_bad_fraction=args.max_bad_fraction,
        chunk_bytes=args.chunk_bytes,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    main()
