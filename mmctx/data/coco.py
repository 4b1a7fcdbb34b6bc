"""COCO-style caption files (COCO Captions, Flickr8k/30k in COCO format) as MultimodalBatches.

A caption file is one JSON object::

    {"images":      [{"id": 1, "file_name": "1000268201.jpg"}, ...],
     "annotations": [{"image_id": 1, "caption": "A child in a pink dress ..."}, ...]}

Other keys (``info``, ``licenses``, ``width``, annotation ``id`` ...) are ignored. Image file
names are relative to ``image_dir`` (default: the caption file's folder). An image usually
has several captions (COCO about five):

- training (:class:`CocoCaptionDataset` with ``per_caption=True``) yields one sample per
  caption, so the model trains on each;
- evaluation (``per_caption=False``) yields one sample per image, whose
  ``meta["references"]`` in the batch lists *all* its captions: the captioning task scores
  the generated caption against every reference (BLEU, ROUGE-L, CIDEr-D). Its
  ``targets["caption"]`` (for the validation loss) is the first caption.

The whole file is validated when read; every error names the file and the entry, e.g.
``captions.json: annotations[3] (image_id 7): caption for unknown image_id 7``.

Batches are the same :class:`~mmctx.types.MultimodalBatch` as the manifest data's (see
:func:`~mmctx.data.collate.collate_multimodal`): ``inputs["image"]``, ``targets["caption"]``
and ``targets["caption_mask"]``, ``meta["caption_text"]``, plus ``meta["references"]``.

Any image-captioning config trains on such files by swapping its data module for
:class:`~mmctx.data.datamodules.CocoCaptionDataModule`, e.g.::

    mmctx fit --config configs/caption_image.yaml --data=mmctx.data.CocoCaptionDataModule \
        --data.train_file=flickr8k/train.json --data.val_file=flickr8k/val.json \
        --data.test_file=flickr8k/test.json --data.image_dir=flickr8k/images --data.image_size=128

(in YAML: ``data: {class_path: mmctx.data.CocoCaptionDataModule, init_args: {train_file:
..., image_dir: ...}}``). The vocabulary is built from the training captions unless
``tokenizer`` names one. To caption a folder of images with a trained checkpoint — a JSONL
of ``{"input": file name, "caption": ...}`` — point ``predict_path`` at the folder and
``tokenizer`` at the one saved in the run folder::

    mmctx predict --config configs/caption_image.yaml --ckpt_path best \
        --data=mmctx.data.CocoCaptionDataModule --data.predict_path=my_photos/ \
        --data.tokenizer=runs/caption_image/version_0/tokenizer/tokenizer.json \
        --data.image_size=64 --trainer.callbacks+=mmctx.trainers.JsonlPredictionWriter \
        --trainer.callbacks.output_path=captions.jsonl

(``image_size`` as in training: the default data's pictures are 64 pixels.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mmctx.data.collate import collate_multimodal
from mmctx.data.manifest import ManifestError
from mmctx.data.media import MediaError, read_image
from mmctx.data.sample_transform import SampleTransform
from mmctx.data.tokenization import TextTokenizer
from mmctx.types import MultimodalBatch

__all__ = [
    "CocoImage",
    "CocoCaptionCollate",
    "CocoCaptionDataset",
    "image_folder",
    "read_coco_captions",
]

log = logging.getLogger(__name__)

#: Image files :func:`image_folder` picks up.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class CocoImage:
    """One image of a caption file with its captions.

    Attributes:
        id: the image's ``id`` in the file.
        file_name: its ``file_name`` as written in the file.
        path: the resolved image path.
        captions: its captions, in file order (may be empty).
        index: position in the file's ``images`` list.
        caption_entries: position of each caption in the file's ``annotations`` list.
    """

    id: int | str
    file_name: str
    path: Path
    captions: tuple[str, ...]
    index: int
    caption_entries: tuple[int, ...]


def read_coco_captions(
    path: str | Path, image_dir: str | Path | None = None, check_files: bool = True
) -> list[CocoImage]:
    """Read and validate a COCO-style caption file.

    Args:
        path: the JSON file.
        image_dir: folder the ``file_name`` entries are relative to (default: ``path``'s
            folder).
        check_files: check that every image file exists and is not empty.

    Returns:
        the images in file order, each with its captions.

    Raises:
        ManifestError: naming the file and the entry, for malformed JSON, a missing or
            non-list ``images``/``annotations``, an image without ``id`` or ``file_name``, a
            duplicate image id, a missing image file, a caption for an unknown image id and
            a missing, non-string or empty caption.
    """
    path = Path(path)
    root = Path(image_dir) if image_dir is not None else path.parent
    name = path.name

    def error(where: str, reason: str) -> ManifestError:
        return ManifestError(f"{path}: {where}: {reason}" if where else f"{path}: {reason}")

    if not path.is_file():
        raise ManifestError(f"{path}: caption file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error("", f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise error("", f"expected a JSON object with 'images' and 'annotations', got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise error(key, "missing or not a list (a COCO caption file has 'images' and 'annotations')")

    images: dict[Any, dict[str, Any]] = {}
    order: list[Any] = []
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise error(where, f"expected an object, got {json.dumps(entry)}")
        image_id = entry.get("id")
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or image_id == "":
            raise error(where, f"'id' must be an integer or a non-empty string, got {json.dumps(image_id)}")
        where = f"images[{i}] (id {image_id})"
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            raise error(where, f"'file_name' must be a non-empty string, got {json.dumps(file_name)}")
        if image_id in images:
            raise error(where, f"duplicate image id {image_id!r} (first at images[{images[image_id]['index']}])")
        file_path = root / file_name
        if check_files:
            if not file_path.is_file():
                raise error(where, f"image file not found: {file_path}")
            if file_path.stat().st_size == 0:
                raise error(where, f"image file is empty (0 bytes): {file_path}")
        images[image_id] = {"index": i, "file_name": file_name, "path": file_path, "captions": [], "entries": []}
        order.append(image_id)

    for k, entry in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(entry, dict):
            raise error(where, f"expected an object, got {json.dumps(entry)}")
        image_id = entry.get("image_id")
        where = f"annotations[{k}] (image_id {json.dumps(image_id)})"
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or image_id not in images:
            raise error(where, f"caption for unknown image_id {json.dumps(image_id)} (not in 'images')")
        caption = entry.get("caption")
        if caption is None:
            raise error(where, "missing 'caption'")
        if not isinstance(caption, str):
            raise error(where, f"caption must be a string, got {json.dumps(caption)}")
        if not caption.strip():
            raise error(where, f"empty caption {json.dumps(caption)}")
        images[image_id]["captions"].append(caption.strip())
        images[image_id]["entries"].append(k)

    if not order:
        raise error("images", "no images")
    log.debug("%s: %d images, %d captions", name, len(order), len(data["annotations"]))
    return [
        CocoImage(
            id=image_id,
            file_name=images[image_id]["file_name"],
            path=images[image_id]["path"],
            captions=tuple(images[image_id]["captions"]),
            index=images[image_id]["index"],
            caption_entries=tuple(images[image_id]["entries"]),
        )
        for image_id in order
    ]


def image_folder(folder: str | Path) -> list[CocoImage]:
    """The image files directly in ``folder`` (by suffix, see :data:`IMAGE_SUFFIXES`), sorted
    by name, as captionless :class:`CocoImage` entries (``id`` and ``file_name``: the name).

    Raises:
        ManifestError: the folder does not exist or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ManifestError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [CocoImage(p.name, p.name, p, (), i, ()) for i, p in enumerate(files)]


class CocoCaptionDataset(Dataset):
    """Samples of a COCO-style caption file, as dicts like :class:`~mmctx.data.ManifestDataset`'s.

    Each item has ``"id"`` and ``"source"`` (``"file:images[i]"`` or
    ``"file:annotations[k]"``), ``"image"`` (3, H, W) float (RGB, resized to ``image_size``
    square, transparency composited on white, normalised with ImageNet statistics) and,
    when the image has captions, ``"references"`` (all the image's captions) and — unless
    ``require_captions`` is False (prediction: a batch may mix images with and without
    captions) — ``"caption"`` (T,) long ``[bos] ... [eos]`` ids (at most ``max_text_len``)
    and ``"caption_text"``: the sample's caption, or the image's first one.

    Args:
        path: the caption file, or a folder of images (captioned without references, for
            prediction: its image files, sorted by name, with ``require_captions=False``).
        tokenizer: encodes the captions (needs BOS and EOS tokens).
        image_dir: folder of the images (default: the file's folder).
        per_caption: one sample per caption (training) instead of one per image
            (evaluation, prediction).
        require_captions: drop images without captions (logged); False keeps them
            (prediction), without caption fields.
        image_size: side of the square images fed to the model (default recipe).
        max_text_len: longer captions are truncated (logged once).
        preprocessing: an image preprocessing dict instead of the default recipe (see
            :mod:`mmctx.data.sample_transform`).
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: TextTokenizer,
        image_dir: str | Path | None = None,
        per_caption: bool = True,
        require_captions: bool = True,
        image_size: int = 64,
        max_text_len: int = 64,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if tokenizer.bos_id is None or tokenizer.eos_id is None:
            raise ValueError(f"CocoCaptionDataset: the tokenizer {tokenizer!r} needs BOS and EOS tokens")
        if max_text_len < 3:
            raise ValueError(f"CocoCaptionDataset: max_text_len must be >= 3 (BOS, a word, EOS), got {max_text_len}")
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.per_caption = per_caption
        self.require_captions = require_captions
        self.max_text_len = max_text_len
        if self.path.is_dir():
            if require_captions or per_caption:
                raise ValueError(f"CocoCaptionDataset: {self.path} is a folder of images, without captions to train "
                                 "or evaluate on (a folder is for prediction: require_captions=False)")
            self.images = image_folder(self.path)
        else:
            self.images = read_coco_captions(self.path, image_dir)
        uncaptioned = [im for im in self.images if not im.captions]
        if uncaptioned and (require_captions or per_caption):
            log.warning(
                "%s: %d of %d images have no caption and are left out (first: images[%d], %s)",
                self.path, len(uncaptioned), len(self.images), uncaptioned[0].index, uncaptioned[0].file_name,
            )
            self.images = [im for im in self.images if im.captions]
        if not self.images:
            raise ManifestError(f"{self.path}: no image has a caption")
        # (image position, caption position or None) of every sample
        self.samples: list[tuple[int, int | None]] = (
            [(i, j) for i, im in enumerate(self.images) for j in range(len(im.captions))]
            if per_caption
            else [(i, None) for i in range(len(self.images))]
        )
        self._warned = False
        #: The per-sample preprocessing (shared with inference).
        self.transform = SampleTransform(
            tokenizer, image_size=image_size, preprocessing=preprocessing, max_text_len=max_text_len
        )

    @property
    def references(self) -> list[list[str]]:
        """Every image's captions (the references of an evaluation), in sample order when
        ``per_caption`` is False."""
        return [list(im.captions) for im in self.images]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, j = self.samples[index]
        image = self.images[i]
        if j is None:
            item: dict[str, Any] = {"id": image.file_name, "source": f"{self.path.name}:images[{image.index}]"}
            if self.path.is_dir():
                item["source"] = str(image.path)
        else:
            entry = image.caption_entries[j]
            item = {"id": f"{image.file_name}#{j}", "source": f"{self.path.name}:annotations[{entry}]"}
        item["image"] = self._load_image(image)
        if image.captions and (self.require_captions or self.per_caption):
            text = image.captions[0 if j is None else j]
            item["caption"] = self._encode(image, 0 if j is None else j, text)
            item["caption_text"] = text
        if image.captions:
            item["references"] = list(image.captions)
        return item

    def _encode(self, image: CocoImage, j: int, text: str) -> Tensor:
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ManifestError(
                f"{self.path}: annotations[{image.caption_entries[j]}] (image_id {image.id}): "
                f"caption {text!r} gives no tokens"
            )
        limit = self.max_text_len - 2
        if len(ids) > limit:
            if not self._warned:
                self._warned = True
                log.warning("%s: captions truncated to %d tokens; raise max_text_len to keep more", self.path, limit)
            ids = ids[:limit]
        return torch.tensor([self.tokenizer.bos_id, *ids, self.tokenizer.eos_id], dtype=torch.long)

    def _load_image(self, image: CocoImage) -> Tensor:
        try:
            rgb = self.read(image)
        except MediaError as err:
            raise ManifestError(f"{self.path}: images[{image.index}] (id {image.id}): {err}", kind=err.kind) from err
        return self.transform.image(rgb)  # (3, H, W)

    def check_files(self) -> None:
        """Decode every image once, up front, so a bad file fails now rather than mid-run.

        Raises:
            ManifestError: naming the count of bad images and the first few (file, entry,
                reason).
        """
        errors = []
        for image in self.images:
            try:
                self.read(image).close()
            except MediaError as err:
                errors.append(f"  {self.path}: images[{image.index}] (id {image.id}): {err}")
        if errors:
            raise ManifestError(
                "\n".join([f"{self.path}: {len(errors)} of {len(self.images)} images cannot be decoded (check_files):",
                           *errors[:5], "fix or remove these images"]),
                kind="unreadable image",
            )

    def read(self, image: CocoImage) -> Image.Image:
        """The decoded RGB image (as :class:`~mmctx.data.inference.InputEncoder` decodes a file).

        Raises:
            mmctx.data.media.MediaError: the file cannot be decoded.
        """
        return read_image(image.path, draft_size=self.transform.draft_size)


class CocoCaptionCollate:
    """Collate :class:`CocoCaptionDataset` items: :func:`~mmctx.data.collate.collate_multimodal`
    plus ``meta["references"]`` (each sample's list of captions) when the items have them.
    Picklable (DataLoader workers).

    Args:
        pad_id: the tokenizer's padding id.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> MultimodalBatch:
        batch = collate_multimodal(items, self.pad_id)
        if all("references" in item for item in items):
            batch.meta["references"] = [list(item["references"]) for item in items]
        return batch

    def __repr__(self) -> str:
        return f"CocoCaptionCollate(pad_id={self.pad_id})"
