"""A data set read from a JSONL manifest of image/audio paths, texts and labels.

One JSON object per line, for example::

    {"id": "s1", "image": "images/s1.png", "audio": "audio/s1.flac",
     "text": "what animals", "label": "dog", "caption": "a dog , an apple and a bus"}

Paths are relative to the manifest's folder. Every field is optional per row: a row without
``image`` (or with ``"image": null``) gives that sample a False image mask, never a made-up
tensor. Blank lines are allowed and skipped.

Bad input follows ``on_error``:

- ``"raise"`` (default): every row is validated when the data set is built, so a bad line
  fails at once with its file, line and field, e.g.
  ``train.jsonl:17: field 'image': file not found: images/x.png``; a file whose *content*
  is bad (truncated or undecodable image, non-audio or truncated audio file, NaN/Inf
  samples, an image smaller than ``min_image_size`` or larger than ``max_image_pixels``)
  fails the same way when its sample is loaded.
- ``"skip"``: a bad row is dropped instead (the whole row, never replaced by another
  sample), and every referenced file is decoded once when the data set is built, so that
  content problems are found up front too and the kept rows all load. The drops are
  counted per reason (:attr:`ManifestDataset.skipped`, :meth:`ManifestDataset.skip_summary`)
  and logged in one warning; more than ``max_bad_fraction`` bad rows (or no good row at
  all) is an error.

Every :class:`ManifestError` carries a short, stable ``kind`` (the reason), ``line`` and
``field``.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mmctx.data.tokenization import TextTokenizer
from mmctx.types import MODALITIES

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ManifestDataset", "ManifestError", "check_bad_input_policy"]

log = logging.getLogger(__name__)

#: Images are normalised with ImageNet statistics: ``(x - mean) / std`` per channel.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_ON_ERROR = ("raise", "skip")
#: The check pass of ``on_error="skip"`` shows a progress bar above this many rows.
_PROGRESS_MIN_ROWS = 200
#: How many skipped rows the warning and the errors quote.
_EXAMPLES = 5


def check_bad_input_policy(on_error: str, max_bad_fraction: float) -> None:
    """Raise ValueError naming the argument unless ``on_error`` is "raise" or "skip" and
    ``max_bad_fraction`` is in [0, 1] (shared by the data set and the data modules, which
    check at construction, before any data set is built)."""
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {list(_ON_ERROR)}, got {on_error!r}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")


class ManifestError(ValueError):
    """A manifest row is invalid; the message names the file, the line and the field.

    Attributes:
        kind: a short, stable key of the reason, for counting and for code that reacts to
            one reason. Row problems: "not UTF-8", "malformed JSON", "not an object",
            "bad id", "duplicate id", "bad path", "path escapes folder", "file not found",
            "not a file", "empty file", "bad text", "empty text", "no modality",
            "bad label", "unknown label", "missing caption". File content (found when the
            sample is loaded, or up front with ``on_error="skip"``): "unreadable image",
            "image too small", "image too large", "unreadable audio", "truncated audio",
            "no audio samples", "non-finite audio", "no tokens". Whole manifest:
            "manifest not found", "no rows", "missing label" (labels on some rows only),
            "too many bad rows", "no good rows". ``"invalid"`` when not given.
        line: 1-based line of the manifest, or ``None`` for a whole-manifest problem.
        field: the row's field at fault, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "invalid",
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.line = line
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        # keeps kind/line/field through pickling (e.g. out of a DataLoader worker)
        return (_manifest_error, (str(self), self.kind, self.line, self.field))


def _manifest_error(message: str, kind: str, line: int | None, field: str | None) -> ManifestError:
    return ManifestError(message, kind=kind, line=line, field=field)


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
      normalised with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`. JPEGs are decoded at a
      reduced scale (PIL's ``draft``, a power of two no smaller than ``image_size``).
    - ``"audio"``: (S,) float32 waveform at ``sample_rate`` Hz: channels averaged (downmix,
      logged once per channel count), other sample rates resampled with
      ``torchaudio.functional.resample`` (logged once per source rate), truncated to
      ``max_audio_seconds`` (logged once).
    - ``"text"``: (T,) long token ids of ``text_field``, no special tokens, truncated to
      ``max_text_len`` (logged once).
    - ``"label"``: int class index, ``classes.index(str(row[label_field]))``.
    - ``"caption"``: (T,) long ids ``[bos] + caption + [eos]`` (truncated to
      ``max_text_len``), and ``"caption_text"`` (str), when ``caption_field`` is set.

    With ``on_error="skip"``, building the data set reads every referenced file once
    (decodes each image, reads each audio file, tokenizes each text): less than one pass of
    data loading (no resizing, resampling or batching): about 0.4 ms per row of the default
    data (64 x 64 PNG, 1.6 s FLAC, short text; 3,000 rows in about 1 s on a 2-core CPU),
    far more for large photos or long recordings. Each process (e.g. each DDP rank) that
    builds the data set pays it. A progress bar shows above 200 rows. With
    ``"raise"`` nothing is decoded before it is loaded.

    Args:
        manifest: path of the JSONL file.
        modalities: which of "text", "image", "audio" to load.
        tokenizer: tokenizer for the text (needed when "text" is loaded or
            ``caption_field`` is set).
        classes: class names; a row's label ``l`` maps to ``classes.index(str(l))``.
            ``None``: the sorted unique labels of this manifest's (kept) rows (numerically
            sorted when all are integers); see :attr:`classes`.
        label_field: field holding the label; ``None`` loads no labels. Labels must be on
            every row or on none (an error with either ``on_error``).
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
            absolute paths elsewhere); refused by default.
        on_error: ``"raise"`` fails on the first bad row (at construction) or bad file (when
            loaded), naming file, line, field and reason; ``"skip"`` drops bad rows (files
            checked up front), counts them per reason in :attr:`skipped` and logs one
            warning with the counts and the first few examples.
        max_bad_fraction: with ``on_error="skip"``, more than this fraction of bad rows
            (of the non-blank lines) is an error, in [0, 1].
        min_image_size: smallest allowed image side, in pixels (read from the file header);
            a smaller image is an error ("image too small"). The default 8 refuses 1 x 1
            placeholder images; pass ``min_image_size=1`` to allow any size.
        max_image_pixels: largest allowed width x height, read from the file header before
            anything is decoded ("image too large"), so a huge image never fills memory.

    Raises:
        ValueError: for invalid arguments (e.g. an unknown ``on_error``).
        ManifestError: with ``on_error="raise"``, at construction for any invalid row
            (bad JSON, wrong field type, missing or empty file, path outside the folder,
            unknown label, empty text, duplicate id), and in ``__getitem__`` for a file
            that cannot be decoded; with ``on_error="skip"``, at construction when too many
            rows (or every row) are bad. In both modes, at construction for a missing or
            empty manifest and for labels on some rows only.
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
        on_error: Literal["raise", "skip"] = "raise",
        max_bad_fraction: float = 0.05,
        min_image_size: int = 8,
        max_image_pixels: int = 50_000_000,
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
        check_bad_input_policy(on_error, max_bad_fraction)
        if min_image_size < 1 or max_image_pixels < 1:
            raise ValueError(
                f"min_image_size and max_image_pixels must be positive, got {min_image_size} "
                f"and {max_image_pixels}"
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
        self.on_error = on_error
        self.max_bad_fraction = max_bad_fraction
        self.min_image_size = min_image_size
        self.max_image_pixels = max_image_pixels
        self.root = self.manifest.parent
        self._warned: set[str] = set()
        #: reason kind -> messages of the rows dropped for it, in file order ("skip" only).
        self.skipped: dict[str, list[str]] = {}
        self._skipped_errors: list[ManifestError] = []

        if classes is not None:
            if not all(isinstance(c, str) for c in classes):
                raise TypeError(f"classes must be strings, got {classes!r}")
            if len(set(classes)) != len(classes):
                raise ValueError(f"duplicate names in classes: {classes!r}")
        self._class_index = {name: i for i, name in enumerate(classes or [])}
        self._given_classes = classes is not None

        raw = self._read_rows()
        #: Non-blank lines of the manifest (the denominator of ``max_bad_fraction``).
        self.total_rows = len(raw)
        seen_ids: dict[str, int] = {}
        checked: list[tuple[_Row, str | None]] = []
        for line, obj in raw:
            if isinstance(obj, ManifestError):  # the line is not a JSON object
                self._reject(obj)
                continue
            try:
                checked.append(self._validate(line, obj, seen_ids))
            except ManifestError as error:
                self._reject(error)
        if self.on_error == "skip":
            checked = self._check_files(checked)
            self._finish_skipping()

        names = [name for _, name in checked]
        if classes is not None:
            self.classes: list[str] = list(classes)
        else:
            self.classes = _sorted_labels({n for n in names if n is not None})
            self._class_index = {name: i for i, name in enumerate(self.classes)}
        self.rows: list[_Row] = [
            replace(row, label=None if name is None else self._class_index[name])
            for row, name in checked
        ]
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

    def _error(self, line: int, field: str | None, reason: str, kind: str) -> ManifestError:
        where = f"{self.manifest}:{line}"
        return ManifestError(
            f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}",
            kind=kind,
            line=line,
            field=field,
        )

    def _reject(self, error: ManifestError) -> None:
        """Raise ``error`` (``on_error="raise"``) or record its row as skipped."""
        if self.on_error == "raise":
            raise error
        self._skipped_errors.append(error)

    def _read_rows(self) -> list[tuple[int, dict[str, Any] | ManifestError]]:
        """Non-blank lines as (line, JSON object), or (line, error) for unparsable ones."""
        if not self.manifest.is_file():
            raise ManifestError(
                f"{self.manifest}: manifest file not found", kind="manifest not found"
            )
        rows: list[tuple[int, dict[str, Any] | ManifestError]] = []
        with open(self.manifest, "rb") as handle:
            for line_no, data in enumerate(handle, start=1):
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as error:
                    reason = f"not UTF-8 text: {error}"
                    rows.append((line_no, self._error(line_no, None, reason, "not UTF-8")))
                    continue
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as error:
                    obj = self._error(line_no, None, f"malformed JSON: {error}", "malformed JSON")
                else:
                    if not isinstance(obj, dict):
                        obj = self._error(
                            line_no,
                            None,
                            f"expected a JSON object, got {type(obj).__name__}",
                            "not an object",
                        )
                rows.append((line_no, obj))
        if not rows:
            raise ManifestError(f"{self.manifest}: manifest has no rows", kind="no rows")
        return rows

    def _label_string(self, line: int, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self._error(
                line,
                self.label_field,
                f"label must be a string or an integer, got {json.dumps(value)}",
                "bad label",
            )
        return str(value)

    def _path(self, line: int, obj: dict[str, Any], field: str) -> Path | None:
        value = obj.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            reason = f"expected a non-empty path string, got {json.dumps(value)}"
            raise self._error(line, field, reason, "bad path")
        path = Path(os.path.normpath(self.root / value))
        if not self.allow_outside_root:
            root = Path(os.path.normpath(self.root.absolute()))
            if not Path(os.path.normpath(path.absolute())).is_relative_to(root):
                raise self._error(
                    line,
                    field,
                    f"path escapes the manifest folder: {value} (pass allow_outside_root=True "
                    "to allow it)",
                    "path escapes folder",
                )
        if not path.exists():
            raise self._error(line, field, f"file not found: {value}", "file not found")
        if not path.is_file():
            raise self._error(line, field, f"not a file: {value}", "not a file")
        if path.stat().st_size == 0:
            raise self._error(line, field, f"file is empty (0 bytes): {value}", "empty file")
        return path

    def _text(self, line: int, obj: dict[str, Any], field: str) -> str | None:
        value = obj.get(field)
        if value is None:
            return None
        if not isinstance(value, str):
            reason = f"expected a string, got {json.dumps(value)}"
            raise self._error(line, field, reason, "bad text")
        if not value.strip():
            raise self._error(line, field, "empty or whitespace-only text", "empty text")
        return value

    def _validate(
        self, line: int, obj: dict[str, Any], seen_ids: dict[str, int]
    ) -> tuple[_Row, str | None]:
        """The row (label not yet an index) and its label name; raises its first problem."""
        row_id = obj.get("id", f"{self.manifest.name}:{line}")
        if isinstance(row_id, bool) or not isinstance(row_id, (str, int)) or str(row_id) == "":
            raise self._error(
                line,
                "id",
                f"expected a non-empty string or integer, got {json.dumps(row_id)}",
                "bad id",
            )
        row_id = str(row_id)
        # the first row with an id owns it, even if that row is dropped for another reason,
        # so which row is a duplicate never depends on the files' contents
        if row_id in seen_ids:
            raise self._error(
                line,
                "id",
                f"duplicate id {row_id!r} (first on line {seen_ids[row_id]})",
                "duplicate id",
            )
        seen_ids[row_id] = line
        image = self._path(line, obj, self.image_field) if "image" in self.modalities else None
        audio = self._path(line, obj, self.audio_field) if "audio" in self.modalities else None
        text = self._text(line, obj, self.text_field) if "text" in self.modalities else None
        if image is None and audio is None and text is None:
            fields = {"image": self.image_field, "audio": self.audio_field, "text": self.text_field}
            wanted = [fields[m] for m in self.modalities]
            raise self._error(
                line,
                "/".join(wanted),
                f"row has none of the requested modalities {wanted}",
                "no modality",
            )
        name = None
        if self.label_field is not None and obj.get(self.label_field) is not None:
            name = self._label_string(line, obj[self.label_field])
            if self._given_classes and name not in self._class_index:
                raise self._error(
                    line,
                    self.label_field,
                    f"unknown label {json.dumps(obj[self.label_field])} "
                    f"(classes: {list(self._class_index)})",
                    "unknown label",
                )
        caption = None
        if self.caption_field is not None:
            caption = self._text(line, obj, self.caption_field)
            if caption is None:
                raise self._error(
                    line, self.caption_field, "missing (caption_field is set)", "missing caption"
                )
        return _Row(line, row_id, image, audio, text, None, caption), name

    def _check_files(
        self, checked: list[tuple[_Row, str | None]]
    ) -> list[tuple[_Row, str | None]]:
        """Decode every file (and tokenize every text) of the rows once; drop failing rows."""
        from tqdm import tqdm

        kept = []
        progress = tqdm(
            checked,
            desc=f"checking {self.manifest.name}",
            unit="row",
            disable=len(checked) <= _PROGRESS_MIN_ROWS,
            leave=False,
        )
        for row, name in progress:
            try:
                if row.image is not None:
                    self._read_image(row).close()
                if row.audio is not None:
                    self._read_audio(row)
                if row.text is not None:
                    self._token_ids(row, self.text_field, row.text)
                if row.caption is not None:
                    self._token_ids(row, self.caption_field, row.caption)
            except ManifestError as error:
                self._reject(error)
            else:
                kept.append((row, name))
        return kept

    def _finish_skipping(self) -> None:
        """Fill :attr:`skipped`; fail on too many bad rows, else log one warning."""
        self._skipped_errors.sort(key=lambda e: e.line or 0)
        for error in self._skipped_errors:
            self.skipped.setdefault(error.kind, []).append(str(error))
        bad = len(self._skipped_errors)
        if not bad:
            return
        fraction = bad / self.total_rows
        if bad == self.total_rows:
            raise ManifestError(
                f"every row is bad, nothing to load: {self.skip_summary()}", kind="no good rows"
            )
        if fraction > self.max_bad_fraction:
            raise ManifestError(
                f"too many bad rows ({fraction:.1%} > max_bad_fraction={self.max_bad_fraction}; "
                f"fix the data or raise max_bad_fraction): {self.skip_summary()}",
                kind="too many bad rows",
            )
        log.warning(self.skip_summary())

    def skip_summary(self) -> str:
        """What ``on_error="skip"`` dropped: the counts per reason and the first rows."""
        bad = len(self._skipped_errors)
        if not bad:
            return f"{self.manifest}: no row skipped (of {self.total_rows})"
        counts = sorted(self.skipped.items(), key=lambda item: (-len(item[1]), item[0]))
        lines = [
            f"{self.manifest}: skipped {bad} of {self.total_rows} rows "
            f"({bad / self.total_rows:.1%}; on_error='skip'): "
            + ", ".join(f"{len(messages)} {kind}" for kind, messages in counts),
            f"first {min(bad, _EXAMPLES)}:",
        ]
        lines += [f"  {error}" for error in self._skipped_errors[:_EXAMPLES]]
        return "\n".join(lines)

    def _check_consistency(self) -> None:
        labelled = [row.label is not None for row in self.rows]
        if any(labelled) and not all(labelled):
            missing = self.rows[labelled.index(False)]
            first = self.rows[labelled.index(True)]
            raise self._error(
                missing.line,
                self.label_field,
                f"missing label (line {first.line} has one: labels must be on every row or "
                "on none)",
                "missing label",
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

    def _token_ids(self, row: _Row, field: str | None, text: str) -> list[int]:
        assert self.tokenizer is not None
        try:
            ids = self.tokenizer.encode(text)
        except ValueError as error:
            raise self._error(row.line, field, str(error), "bad text") from error
        if not ids:
            raise self._error(row.line, field, f"text {text!r} gives no tokens", "no tokens")
        return ids

    def _encode(self, row: _Row, field: str | None, text: str, reserve: int = 0) -> Tensor:
        ids = self._token_ids(row, field, text)
        limit = self.max_text_len - reserve
        if len(ids) > limit:
            self._warn_once(
                f"text:{field}",
                f"{self.manifest}: field '{field}' truncated to {limit} tokens (first at line "
                f"{row.line}: {len(ids)} tokens); raise max_text_len to keep more",
            )
            ids = ids[:limit]
        return torch.tensor(ids, dtype=torch.long)

    def _read_image(self, row: _Row) -> Image.Image:
        """The row's image as RGB, after the size checks on the header (nothing decoded
        before them)."""
        assert row.image is not None
        field = self.image_field

        def unreadable(error: Exception) -> ManifestError:
            reason = f"cannot read image {row.image}: {type(error).__name__}: {error}"
            return self._error(row.line, field, reason, "unreadable image")

        try:
            im = Image.open(row.image)  # reads the header only
        except Image.DecompressionBombError as error:  # PIL's own limit (~179 Mpixels)
            reason = f"image too large: {error}"
            raise self._error(row.line, field, reason, "image too large") from error
        except Exception as error:  # UnidentifiedImageError, OSError, ...
            raise unreadable(error) from error
        with im:
            width, height = im.size
            if min(width, height) < self.min_image_size:
                raise self._error(
                    row.line,
                    field,
                    f"image too small: {width}x{height} pixels, a side below min_image_size="
                    f"{self.min_image_size}: {row.image}",
                    "image too small",
                )
            if width * height > self.max_image_pixels:
                raise self._error(
                    row.line,
                    field,
                    f"image too large: {width}x{height} = {width * height} pixels > "
                    f"max_image_pixels={self.max_image_pixels} (not decoded): {row.image}",
                    "image too large",
                )
            try:
                if im.format == "JPEG":  # decode at 1/2..1/8 scale if that still covers image_size
                    im.draft("RGB", (self.image_size, self.image_size))
                im.load()
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    return Image.alpha_composite(canvas, rgba).convert("RGB")
                return im.convert("RGB")
            except Exception as error:  # PIL raises OSError (truncated), ValueError, SyntaxError...
                raise unreadable(error) from error

    def _load_image(self, row: _Row) -> Tensor:
        return self._image_transform(self._read_image(row))  # (3, H, W)

    def _read_audio(self, row: _Row) -> tuple[np.ndarray, int]:
        """The row's samples as (S, channels) float32 and their rate, after the checks."""
        assert row.audio is not None
        field = self.audio_field
        try:
            data, rate = sf.read(row.audio, dtype="float32", always_2d=True)  # (S, channels)
        except Exception as error:  # soundfile raises LibsndfileError/RuntimeError/TypeError
            raise self._error(
                row.line,
                field,
                f"cannot read audio {row.audio}: {type(error).__name__}: {error}",
                "unreadable audio",
            ) from error
        cut = _wav_truncation(row.audio)
        if cut is not None:  # libsndfile reads what is there without complaint
            raise self._error(
                row.line, field, f"truncated audio file {row.audio}: {cut}", "truncated audio"
            )
        if data.shape[0] == 0:
            raise self._error(
                row.line, field, f"audio has no samples: {row.audio}", "no audio samples"
            )
        finite = np.isfinite(data)
        if not finite.all():
            raise self._error(
                row.line,
                field,
                f"audio has {int((~finite).sum())} NaN/Inf samples: {row.audio}",
                "non-finite audio",
            )
        return data, int(rate)

    def _load_audio(self, row: _Row) -> Tensor:
        data, rate = self._read_audio(row)
        channels = data.shape[1]
        if channels > 1:
            self._warn_once(
                f"downmix:{channels}",
                f"{self.manifest}: audio downmixed {channels} channels to mono (first at line "
                f"{row.line}); channels are averaged",
            )
        wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))  # (S,) downmix
        if rate != self.sample_rate:
            import torchaudio.functional as AF

            self._warn_once(
                f"resample:{rate}",
                f"{self.manifest}: audio resampled from {rate} Hz to {self.sample_rate} Hz "
                f"(first at line {row.line})",
            )
            wave = AF.resample(wave, rate, self.sample_rate)
        if wave.shape[0] > self.max_audio_samples:
            self._warn_once(
                "audio",
                f"{self.manifest}: audio truncated to max_audio_seconds={self.max_audio_seconds} "
                f"(first at line {row.line}: {wave.shape[0] / self.sample_rate:.2f} s)",
            )
            wave = wave[: self.max_audio_samples]
        return wave.contiguous()


def _sorted_labels(labels: set[str]) -> list[str]:
    """Label names sorted numerically when all are integers, else as strings."""
    if all(_is_int_string(v) for v in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _is_int_string(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _wav_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds,
    a description of the cut; else ``None`` (also for other formats, which their decoders
    check). Sizes 0 and 0xFFFFFFFF mean "unknown" (streamed WAVs) and are accepted."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(handle.fileno()).st_size
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk, length = struct.unpack("<4sI", handle.read(8))
            if chunk == b"data":
                available = size - position - 8
                if length not in (0, 0xFFFFFFFF) and length > available:
                    return f"the data chunk declares {length} bytes, the file holds {available}"
                return None
            position += 8 + length + (length & 1)  # chunks are padded to even sizes
    return None
