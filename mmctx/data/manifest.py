"""A data set read from a JSONL manifest of image/audio paths, texts and labels.

One JSON object per line, for example::

    {"id": "s1", "image": "images/s1.png", "audio": "audio/s1.flac",
     "text": "what animals", "label": "dog", "caption": "a dog , an apple and a bus"}

Paths are relative to the manifest's folder. Every field is optional per row: a row without
``image`` (or with ``"image": null``) gives that sample a False image mask, never a made-up
tensor. Blank lines are allowed and skipped. All rows are validated when the data set is
built, so a bad line fails at once with its file, line and field, e.g.
``train.jsonl:17: field 'image': file not found: images/x.png``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mmctx.data.tokenization import TextTokenizer
from mmctx.types import MODALITIES

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ManifestDataset", "ManifestError"]

log = logging.getLogger(__name__)

#: Images are normalised with ImageNet statistics: ``(x - mean) / std`` per channel.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ManifestError(ValueError):
    """A manifest row is invalid; the message names the file, the line and the field."""


@dataclass(frozen=True)
class _Row:
    """One validated manifest row."""

    line: int
    id: str
    image: Path | None
    audio: Path | None
    text: str | None
    label: int | None
    caption: str | None


class ManifestDataset(Dataset):
    """Samples of a JSONL manifest, as dicts of tensors.

    Each item is a dict with ``"id"`` (str), ``"source"`` (``"file:line"``) and, when the
    row has them and they are requested:

    - ``"image"``: (3, H, W) float, RGB resized to ``image_size`` x ``image_size`` (aspect
      ratio not kept; transparent pixels composited on white), scaled to [0, 1] and then
      normalised with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
    - ``"audio"``: (S,) float32 waveform at ``sample_rate`` Hz, channels averaged (downmix),
      truncated to ``max_audio_seconds`` (logged once).
    - ``"text"``: (T,) long token ids of ``text_field``, no special tokens, truncated to
      ``max_text_len`` (logged once).
    - ``"label"``: int class index, ``classes.index(str(row[label_field]))``.
    - ``"caption"``: (T,) long ids ``[bos] + caption + [eos]`` (truncated to
      ``max_text_len``), and ``"caption_text"`` (str), when ``caption_field`` is set.

    Args:
        manifest: path of the JSONL file.
        modalities: which of "text", "image", "audio" to load.
        tokenizer: tokenizer for the text (needed when "text" is loaded or
            ``caption_field`` is set).
        classes: class names; a row's label ``l`` maps to ``classes.index(str(l))``.
            ``None``: the sorted unique labels of this manifest (numerically sorted when
            all are integers); see :attr:`classes`.
        label_field: field holding the label; ``None`` loads no labels. Labels must be on
            every row or on none.
        image_size: side of the square output images, in pixels.
        sample_rate: output audio sample rate, in Hz (files are resampled to it).
        max_audio_seconds: longer audio is truncated to this length.
        max_text_len: longer token sequences are truncated to this many tokens.
        text_field: field holding the text.
        image_field: field holding the image path.
        audio_field: field holding the audio path.
        caption_field: field holding a target text (e.g. a caption to generate); ``None``
            loads none. When set, every row must have it.
        allow_outside_root: allow paths that leave the manifest's folder (``..``,
            absolute paths elsewhere).

    Raises:
        ManifestError: at construction for any invalid row (bad JSON, wrong field type,
            missing or empty file, path outside the folder, unknown label, empty text,
            duplicate id); in ``__getitem__`` for unreadable images or audio.
    """

    def __init__(
        self,
        manifest: str | Path,
        modalities: Sequence[str],
        tokenizer: TextTokenizer | None = None,
        classes: list[str] | None = None,
        label_field: str | None = "label",
        image_size: int = 64,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        text_field: str = "text",
        image_field: str = "image",
        audio_field: str = "audio",
        caption_field: str | None = None,
        allow_outside_root: bool = False,
    ) -> None:
        super().__init__()
        self.manifest = Path(manifest)
        self.modalities = tuple(modalities)
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(
                f"modalities must be a non-empty subset of {list(MODALITIES)}, got "
                f"{list(self.modalities)}"
            )
        if ("text" in self.modalities or caption_field is not None) and tokenizer is None:
            raise ValueError(f"{self.manifest}: a tokenizer is needed to load text")
        if (
            caption_field is not None
            and tokenizer is not None
            and (tokenizer.bos_id is None or tokenizer.eos_id is None)
        ):
            raise ValueError(
                f"caption_field={caption_field!r} needs a tokenizer with BOS and EOS tokens; "
                f"{tokenizer!r} lacks one"
            )
        if image_size < 1 or sample_rate < 1 or max_audio_seconds <= 0 or max_text_len < 1:
            raise ValueError(
                "image_size, sample_rate, max_audio_seconds and max_text_len must be positive"
            )
        self.tokenizer = tokenizer
        self.label_field = label_field
        self.image_size = image_size
        self.sample_rate = sample_rate
        self.max_audio_seconds = max_audio_seconds
        self.max_audio_samples = int(round(max_audio_seconds * sample_rate))
        self.max_text_len = max_text_len
        self.text_field = text_field
        self.image_field = image_field
        self.audio_field = audio_field
        self.caption_field = caption_field
        self.allow_outside_root = allow_outside_root
        self.root = self.manifest.parent
        self._warned: set[str] = set()

        if classes is not None:
            if not all(isinstance(c, str) for c in classes):
                raise TypeError(f"classes must be strings, got {classes!r}")
            if len(set(classes)) != len(classes):
                raise ValueError(f"duplicate names in classes: {classes!r}")
        raw = self._read_rows()
        self.classes: list[str] = list(classes) if classes is not None else self._infer_classes(raw)
        self._class_index = {name: i for i, name in enumerate(self.classes)}
        self.rows: list[_Row] = [self._validate(line, obj) for line, obj in raw]
        self._check_consistency()

        from torchvision.transforms import v2

        self._image_transform = v2.Compose(
            [
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Resize((image_size, image_size), antialias=True),
                v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
            ]
        )

    # ------------------------------------------------------------------ validation

    def _error(self, line: int, field: str | None, reason: str) -> ManifestError:
        where = f"{self.manifest}:{line}"
        return ManifestError(
            f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}"
        )

    def _read_rows(self) -> list[tuple[int, dict[str, Any]]]:
        if not self.manifest.is_file():
            raise ManifestError(f"{self.manifest}: manifest file not found")
        rows = []
        with open(self.manifest, "rb") as handle:
            for line_no, data in enumerate(handle, start=1):
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise self._error(line_no, None, f"not UTF-8 text: {error}") from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as error:
                    raise self._error(line_no, None, f"malformed JSON: {error}") from None
                if not isinstance(obj, dict):
                    raise self._error(
                        line_no, None, f"expected a JSON object, got {type(obj).__name__}"
                    )
                rows.append((line_no, obj))
        if not rows:
            raise ManifestError(f"{self.manifest}: manifest has no rows")
        return rows

    def _infer_classes(self, raw: list[tuple[int, dict[str, Any]]]) -> list[str]:
        if self.label_field is None:
            return []
        labels = {
            self._label_string(line, obj[self.label_field])
            for line, obj in raw
            if obj.get(self.label_field) is not None
        }
        if all(_is_int_string(v) for v in labels):
            return sorted(labels, key=int)
        return sorted(labels)

    def _label_string(self, line: int, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self._error(
                line,
                self.label_field,
                f"label must be a string or an integer, got {json.dumps(value)}",
            )
        return str(value)

    def _path(self, line: int, obj: dict[str, Any], field: str) -> Path | None:
        value = obj.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._error(
                line, field, f"expected a non-empty path string, got {json.dumps(value)}"
            )
        path = Path(os.path.normpath(self.root / value))
        if not self.allow_outside_root:
            root = Path(os.path.normpath(self.root.absolute()))
            if not Path(os.path.normpath(path.absolute())).is_relative_to(root):
                raise self._error(
                    line,
                    field,
                    f"path escapes the manifest folder: {value} (pass allow_outside_root=True "
                    "to allow it)",
                )
        if not path.exists():
            raise self._error(line, field, f"file not found: {value}")
        if not path.is_file():
            raise self._error(line, field, f"not a file: {value}")
        if path.stat().st_size == 0:
            raise self._error(line, field, f"file is empty (0 bytes): {value}")
        return path

    def _text(self, line: int, obj: dict[str, Any], field: str) -> str | None:
        value = obj.get(field)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._error(line, field, f"expected a string, got {json.dumps(value)}")
        if not value.strip():
            raise self._error(line, field, "empty or whitespace-only text")
        return value

    def _validate(self, line: int, obj: dict[str, Any]) -> _Row:
        row_id = obj.get("id", f"{self.manifest.name}:{line}")
        if isinstance(row_id, bool) or not isinstance(row_id, (str, int)) or str(row_id) == "":
            raise self._error(
                line, "id", f"expected a non-empty string or integer, got {json.dumps(row_id)}"
            )
        image = self._path(line, obj, self.image_field) if "image" in self.modalities else None
        audio = self._path(line, obj, self.audio_field) if "audio" in self.modalities else None
        text = self._text(line, obj, self.text_field) if "text" in self.modalities else None
        if image is None and audio is None and text is None:
            fields = {"image": self.image_field, "audio": self.audio_field, "text": self.text_field}
            wanted = [fields[m] for m in self.modalities]
            raise self._error(
                line, "/".join(wanted), f"row has none of the requested modalities {wanted}"
            )
        label = None
        if self.label_field is not None and obj.get(self.label_field) is not None:
            name = self._label_string(line, obj[self.label_field])
            if name not in self._class_index:
                raise self._error(
                    line,
                    self.label_field,
                    f"unknown label {json.dumps(obj[self.label_field])} (classes: {self.classes})",
                )
            label = self._class_index[name]
        caption = None
        if self.caption_field is not None:
            caption = self._text(line, obj, self.caption_field)
            if caption is None:
                raise self._error(line, self.caption_field, "missing (caption_field is set)")
        return _Row(line, str(row_id), image, audio, text, label, caption)

    def _check_consistency(self) -> None:
        seen: dict[str, int] = {}
        for row in self.rows:
            if row.id in seen:
                raise self._error(
                    row.line, "id", f"duplicate id {row.id!r} (first on line {seen[row.id]})"
                )
            seen[row.id] = row.line
        labelled = [row.label is not None for row in self.rows]
        if any(labelled) and not all(labelled):
            missing = self.rows[labelled.index(False)]
            first = self.rows[labelled.index(True)]
            raise self._error(
                missing.line,
                self.label_field,
                f"missing label (line {first.line} has one: labels must be on every row or "
                "on none)",
            )

    # ------------------------------------------------------------------ loading

    @property
    def has_labels(self) -> bool:
        """Whether the samples carry labels."""
        return bool(self.rows) and self.rows[0].label is not None

    @property
    def ids(self) -> list[str]:
        """The row ids, in order."""
        return [row.id for row in self.rows]

    def source(self, index: int) -> str:
        """``"<manifest name>:<line>"`` of sample ``index``."""
        return f"{self.manifest.name}:{self.rows[index].line}"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        item: dict[str, Any] = {"id": row.id, "source": self.source(index)}
        if row.image is not None:
            item["image"] = self._load_image(row)
        if row.audio is not None:
            item["audio"] = self._load_audio(row)
        if row.text is not None:
            item["text"] = self._encode(row, self.text_field, row.text)
        if row.label is not None:
            item["label"] = row.label
        if row.caption is not None:
            assert self.tokenizer is not None and self.tokenizer.bos_id is not None
            ids = self._encode(row, self.caption_field, row.caption, reserve=2)
            bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
            item["caption"] = torch.cat([torch.tensor([bos]), ids, torch.tensor([eos])])
            item["caption_text"] = row.caption
        return item

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _encode(self, row: _Row, field: str | None, text: str, reserve: int = 0) -> Tensor:
        assert self.tokenizer is not None
        try:
            ids = self.tokenizer.encode(text)
        except ValueError as error:
            raise self._error(row.line, field, str(error)) from error
        if not ids:
            raise self._error(row.line, field, f"text {text!r} gives no tokens")
        limit = self.max_text_len - reserve
        if len(ids) > limit:
            self._warn_once(
                f"text:{field}",
                f"{self.manifest}: field '{field}' truncated to {limit} tokens (first at line "
                f"{row.line}: {len(ids)} tokens); raise max_text_len to keep more",
            )
            ids = ids[:limit]
        return torch.tensor(ids, dtype=torch.long)

    def _load_image(self, row: _Row) -> Tensor:
        assert row.image is not None
        try:
            with Image.open(row.image) as im:
                im.load()
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(canvas, rgba)
                rgb = im.convert("RGB")
        except Exception as error:  # PIL raises OSError, ValueError, DecompressionBombError...
            raise self._error(
                row.line,
                self.image_field,
                f"cannot read image {row.image}: {type(error).__name__}: {error}",
            ) from error
        return self._image_transform(rgb)  # (3, H, W)

    def _load_audio(self, row: _Row) -> Tensor:
        assert row.audio is not None
        try:
            data, rate = sf.read(row.audio, dtype="float32", always_2d=True)  # (S, channels)
        except Exception as error:  # soundfile raises LibsndfileError/RuntimeError/TypeError
            raise self._error(
                row.line,
                self.audio_field,
                f"cannot read audio {row.audio}: {type(error).__name__}: {error}",
            ) from error
        if data.shape[0] == 0:
            raise self._error(row.line, self.audio_field, f"audio has no samples: {row.audio}")
        wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))  # (S,) downmix
        if rate != self.sample_rate:
            import torchaudio.functional as AF

            wave = AF.resample(wave, int(rate), self.sample_rate)
        if wave.shape[0] > self.max_audio_samples:
            self._warn_once(
                "audio",
                f"{self.manifest}: audio truncated to max_audio_seconds={self.max_audio_seconds} "
                f"(first at line {row.line}: {wave.shape[0] / self.sample_rate:.2f} s)",
            )
            wave = wave[: self.max_audio_samples]
        return wave.contiguous()


def _is_int_string(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
