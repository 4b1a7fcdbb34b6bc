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

Any image-captioning config trains on such files by swapping its data module, e.g.::

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
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mmctx.data.collate import collate_multimodal
from mmctx.data.datamodule import SplitLoadersMixin, TokenizerSizesMixin
from mmctx.data.manifest import IMAGENET_MEAN, IMAGENET_STD, ManifestError
from mmctx.data.tokenization import TextTokenizer, load_tokenizer
from mmctx.types import MultimodalBatch

__all__ = [
    "CocoImage",
    "CocoCaptionCollate",
    "CocoCaptionDataModule",
    "CocoCaptionDataset",
    "image_folder",
    "read_coco_captions",
    "train_word_tokenizer",
]

log = logging.getLogger(__name__)

#: Image files :func:`image_folder` picks up.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Special tokens of :func:`train_word_tokenizer`, ids 0..3 in this order.
_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


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


def train_word_tokenizer(
    texts: Iterable[str], min_frequency: int = 1, max_size: int | None = None
) -> TextTokenizer:
    """A word-level ``tokenizers`` tokenizer whose vocabulary is the words of ``texts``.

    Lower-cased, split on whitespace and punctuation (like the default data's tokenizer);
    ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3, then the words seen at least
    ``min_frequency`` times, most frequent first, ties in alphabetical order — the same
    texts always give the same ids (``tokenizers``' own trainer does not promise that),
    so a new process that rebuilds the tokenizer from the same file can read a checkpoint.

    Args:
        texts: the training captions.
        min_frequency: rarer words become ``[UNK]``.
        max_size: most words kept (specials excluded); None: all.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")])
    counts: Counter = Counter()
    for text in texts:
        counts.update(word for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    words = sorted((w for w, c in counts.items() if c >= min_frequency and w not in _SPECIAL_TOKENS),
                   key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[:max_size]
    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS)}
    vocab.update({w: len(_SPECIAL_TOKENS) + i for i, w in enumerate(words)})
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre
    backend.add_special_tokens(list(_SPECIAL_TOKENS))
    return TextTokenizer(backend, source=f"<word-level, {len(vocab)} tokens>")


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
        image_size: side of the square images fed to the model.
        max_text_len: longer captions are truncated (logged once).
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

        from torchvision.transforms import v2

        self._image_transform = v2.Compose(
            [
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Resize((image_size, image_size), antialias=True),
                v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
            ]
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
            with Image.open(image.path) as im:
                im.load()
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                rgb = im.convert("RGB")
        except Exception as err:  # PIL raises OSError, ValueError, DecompressionBombError...
            raise ManifestError(
                f"{self.path}: images[{image.index}] (id {image.id}): cannot read image {image.path}: "
                f"{type(err).__name__}: {err}"
            ) from err
        return self._image_transform(rgb)  # (3, H, W)


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


class CocoCaptionDataModule(TokenizerSizesMixin, SplitLoadersMixin, LightningDataModule):
    """Image captioning data from COCO-style caption files (train / val / test / predict).

    Training yields one sample per caption; validation, test and predict one per image with
    all its captions as references (see the module docstring). ``vocab_size``, ``pad_id``,
    ``bos_id`` and ``eos_id`` are known after ``__init__``, so the CLI fills them into the
    model.

    The tokenizer: ``tokenizer`` (a ``tokenizer.json`` or a local ``transformers``
    folder), or, when None, a word-level one built from the training captions by
    :func:`train_word_tokenizer` (deterministic, so a later ``mmctx test`` rebuilds the same
    one; the captioning task also saves it in the run folder, where a later config can
    point ``tokenizer`` at it).

    Args:
        train_file: caption file of the training split (also the tokenizer's source).
        val_file: caption file of the validation split (optional).
        test_file: caption file of the test split (optional).
        predict_path: what ``predict`` captions: a caption file (its images need no
            captions) or a folder of images; default: the test file.
        image_dir: folder the ``file_name`` entries are relative to; None: each caption
            file's own folder.
        tokenizer: tokenizer path, or None to build one from the training captions.
        min_word_frequency: words rarer than this in the training captions become
            ``[UNK]`` (built tokenizer only).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        image_size: side of the square images fed to the model, in pixels.
        max_text_len: longer captions (BOS and EOS included) are truncated.
        seed: seed of the training shuffle.
    """

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_path: str | None = None,
        image_dir: str | None = None,
        tokenizer: str | None = None,
        min_word_frequency: int = 5,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 224,
        max_text_len: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.files: dict[str, Path | None] = {
            "train": Path(train_file) if train_file else None,
            "val": Path(val_file) if val_file else None,
            "test": Path(test_file) if test_file else None,
            "predict": Path(predict_path) if predict_path else (Path(test_file) if test_file else None),
        }
        self.image_dir = image_dir
        self.modalities = ["image"]
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.max_text_len = max_text_len
        self.seed = seed
        if tokenizer is not None:
            self.tokenizer: TextTokenizer = load_tokenizer(tokenizer)
        else:
            if self.files["train"] is None:
                raise ValueError("CocoCaptionDataModule: without train_file, pass a tokenizer path")
            images = read_coco_captions(self.files["train"], image_dir, check_files=False)
            self.tokenizer = train_word_tokenizer(
                (c for im in images for c in im.captions), min_frequency=min_word_frequency
            )
        self.datasets: dict[str, CocoCaptionDataset] = {}

    def _dataset(self, split: str) -> CocoCaptionDataset:
        if split not in self.datasets:
            path = self.files[split]
            if path is None:
                arg = "predict_path" if split == "predict" else f"{split}_file"
                raise ValueError(f"CocoCaptionDataModule: {arg} is not set: cannot build the {split} data")
            self.datasets[split] = CocoCaptionDataset(
                path,
                self.tokenizer,
                image_dir=self.image_dir,
                per_caption=split == "train",
                require_captions=split != "predict",
                image_size=self.image_size,
                max_text_len=self.max_text_len,
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Read and validate the caption files the stage needs."""
        splits = {
            None: [s for s in self.files if self.files[s] is not None],
            "fit": ["train", "val"] if self.files["val"] else ["train"],
            "validate": ["val"],
            "test": ["test"],
            "predict": ["predict"],
        }
        if stage not in splits:
            raise ValueError(f"unknown stage {stage!r}")
        for split in splits[stage]:
            self._dataset(split)

    def _collate(self) -> CocoCaptionCollate:
        return CocoCaptionCollate(self.pad_id)

    def _has_split(self, split: str) -> bool:
        return self.files[split] is not None
