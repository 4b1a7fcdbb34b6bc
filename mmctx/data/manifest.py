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

The data set is two parts: parsing and validating the rows (:class:`ManifestDataset`, at
construction) and loading one row's sample (:class:`ManifestSampleLoader`, in
``__getitem__``); the files are decoded and checked by :mod:`mmctx.data.media`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mmctx.data.media import MediaError, read_audio, read_image
from mmctx.data.sample_transform import SampleTransform
from mmctx.data.tokenization import TextTokenizer
from mmctx.types import MODALITIES

__all__ = [
    "ManifestDataset",
    "ManifestError",
    "ManifestSampleLoader",
    "check_bad_input_policy",
    "read_manifest_labels",
    "read_manifest_texts",
]

log = logging.getLogger(__name__)

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


def _lenient_rows(manifest: Path) -> list[tuple[int, dict[str, Any]]]:
    """The (line, object) of every line that parses as a JSON object; others are left to the
    data set's validation."""
    rows = []
    with open(manifest, "rb") as handle:
        for line_no, data in enumerate(handle, start=1):
            try:
                obj = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(obj, dict):
                rows.append((line_no, obj))
    return rows


def read_manifest_texts(manifest: str | Path, fields: Sequence[str]) -> list[str]:
    """The non-empty string values of ``fields`` over the manifest's rows (e.g. to train a
    tokenizer), read without validating the rows.

    Raises:
        ManifestError: the manifest does not exist.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest file not found", kind="manifest not found")
    return [
        obj[f] for _, obj in _lenient_rows(manifest) for f in fields if isinstance(obj.get(f), str) and obj[f].strip()
    ]


def read_manifest_labels(manifest: str | Path, field: str) -> dict[str, int]:
    """Each label name of the manifest's rows (``str`` of the value of ``field``) → the first
    line it is on, read without validating the rows.

    Raises:
        ManifestError: the manifest does not exist.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest file not found", kind="manifest not found")
    labels: dict[str, int] = {}
    for line, obj in _lenient_rows(manifest):
        value = obj.get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            labels.setdefault(str(value), line)
    return labels


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
            "too many bad rows", "no good rows"; data module: "no classes". ``"invalid"`` when not given.
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
      normalised with ImageNet statistics (:data:`~mmctx.data.media.IMAGENET_MEAN`,
      ``IMAGENET_STD``), or as ``preprocessing`` says when given. JPEGs are decoded at a reduced scale (PIL's ``draft``, a power of
      two no smaller than ``image_size``).
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
        image_size: side of the square output images, in pixels (default recipe).
        preprocessing: an image preprocessing dict (``image_size``, ``mean``, ``std``,
            ``interpolation``, ``crop_pct``, ``crop_mode``: a pretrained image tower's
            ``.preprocessing``), applied instead of the default recipe (see
            :mod:`mmctx.data.sample_transform`); None: the default recipe.
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
        preprocessing: dict[str, Any] | None = None,
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
        self.root = self.manifest.parent
        self.modalities = tuple(modalities)
        self.tokenizer = tokenizer
        self.label_field = label_field
        self.max_text_len = max_text_len
        self.text_field = text_field
        self.image_field = image_field
        self.audio_field = audio_field
        self.caption_field = caption_field
        self.allow_outside_root = allow_outside_root
        self.on_error = on_error
        self.max_bad_fraction = max_bad_fraction
        #: reason kind -> messages of the rows dropped for it, in file order ("skip" only).
        self.skipped: dict[str, list[str]] = {}
        self._skipped_errors: list[ManifestError] = []
        _check_modalities(self.modalities, tokenizer, caption_field, self.manifest)
        check_bad_input_policy(on_error, max_bad_fraction)
        #: Loads one row's sample (decodes its files, tokenizes its texts).
        self.loader = ManifestSampleLoader(
            self.manifest,
            tokenizer,
            image_size=image_size,
            preprocessing=preprocessing,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            max_text_len=max_text_len,
            text_field=text_field,
            image_field=image_field,
            audio_field=audio_field,
            caption_field=caption_field,
            min_image_size=min_image_size,
            max_image_pixels=max_image_pixels,
        )
        self._given_classes = classes is not None
        self._class_index = _class_index(classes)

        raw = self._read_rows()
        #: Non-blank lines of the manifest (the denominator of ``max_bad_fraction``).
        self.total_rows = len(raw)
        checked = self._validate_rows(raw)
        if self.on_error == "skip":
            checked = self._check_files(checked)
            self._finish_skipping()
        self.rows: list[_Row] = self._index_labels(checked, classes)
        self._check_consistency()

    # ------------------------------------------------------------------ loader settings

    @property
    def image_size(self) -> int:
        """Side of the square output images, in pixels."""
        return self.loader.image_size

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        """The image preprocessing dict (complete), or None for the default recipe."""
        return self.loader.preprocessing

    @property
    def sample_rate(self) -> int:
        """Output audio sample rate, in Hz."""
        return self.loader.sample_rate

    @property
    def max_audio_seconds(self) -> float:
        """Longer audio is truncated to this length."""
        return self.loader.max_audio_seconds

    @property
    def min_image_size(self) -> int:
        """Smallest allowed image side, in pixels."""
        return self.loader.min_image_size

    @property
    def max_image_pixels(self) -> int:
        """Largest allowed image width x height."""
        return self.loader.max_image_pixels

    # ------------------------------------------------------------------ validation

    def _error(self, line: int, field: str | None, reason: str, kind: str) -> ManifestError:
        return _row_error(self.manifest, line, field, reason, kind)

    def _validate_rows(
        self, raw: list[tuple[int, dict[str, Any] | ManifestError]]
    ) -> list[tuple[_Row, str | None]]:
        """Each parsed row validated (:meth:`_validate`), with its label name; bad rows are
        rejected (:meth:`_reject`)."""
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
        return checked

    def _index_labels(
        self, checked: list[tuple[_Row, str | None]], classes: list[str] | None
    ) -> list[_Row]:
        """Set :attr:`classes` (given, or the sorted labels of the kept rows) and turn each
        row's label name into its class index."""
        names = [name for _, name in checked]
        if classes is not None:
            self.classes: list[str] = list(classes)
        else:
            self.classes = _sorted_labels({n for n in names if n is not None})
            self._class_index = _class_index(self.classes)
        return [
            replace(row, label=None if name is None else self._class_index[name])
            for row, name in checked
        ]

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
        """Decode every file (and tokenize every text) of the rows once
        (:meth:`ManifestSampleLoader.check`); drop failing rows."""
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
                self.loader.check(row)
            except ManifestError as error:
                self._reject(error)
            else:
                kept.append((row, name))
        return kept

    def check_files(self) -> None:
        """Decode every file (and tokenize every text) of the rows once, up front, so bad
        content (truncated PNG/WAV, NaN audio, text saved as .png, a tiny image) fails now
        rather than when its sample is loaded mid-run. With ``on_error="skip"`` the rows were
        checked when the data set was built, and this does nothing.

        Raises:
            ManifestError: naming the count of bad rows and the first few (manifest, line,
                field, reason); its ``kind``, ``line`` and ``field`` are the first bad row's.
        """
        if self.on_error == "skip":
            return
        from tqdm import tqdm

        errors: list[ManifestError] = []
        progress = tqdm(self.rows, desc=f"checking {self.manifest.name}", unit="row",
                        disable=len(self.rows) <= _PROGRESS_MIN_ROWS, leave=False)
        for row in progress:
            try:
                self.loader.check(row)
            except ManifestError as error:
                errors.append(error)
        if errors:
            first = errors[0]
            lines = [f"{self.manifest}: {len(errors)} of {len(self.rows)} rows have a bad file (check_files):"]
            lines += [f"  {error}" for error in errors[:_EXAMPLES]]
            lines.append("fix or remove these rows, or pass on_error: skip to drop bad rows")
            raise ManifestError("\n".join(lines), kind=first.kind, line=first.line, field=first.field)

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
        return self.loader(self.rows[index])


def _row_error(manifest: Path, line: int, field: str | None, reason: str, kind: str) -> ManifestError:
    where = f"{manifest}:{line}"
    return ManifestError(
        f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}",
        kind=kind,
        line=line,
        field=field,
    )


def _check_modalities(
    modalities: tuple[str, ...], tokenizer: TextTokenizer | None, caption_field: str | None, manifest: Path
) -> None:
    """Raise ValueError unless ``modalities`` is a non-empty subset of the known ones and the
    tokenizer can encode what is asked for (text needs one, captions need BOS and EOS)."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(
            f"modalities must be a non-empty subset of {list(MODALITIES)}, got {list(modalities)}"
        )
    if ("text" in modalities or caption_field is not None) and tokenizer is None:
        raise ValueError(f"{manifest}: a tokenizer is needed to load text")
    if (
        caption_field is not None
        and tokenizer is not None
        and (tokenizer.bos_id is None or tokenizer.eos_id is None)
    ):
        raise ValueError(
            f"caption_field={caption_field!r} needs a tokenizer with BOS and EOS tokens; "
            f"{tokenizer!r} lacks one"
        )


def _class_index(classes: list[str] | None) -> dict[str, int]:
    """Class name -> index of the given ``classes`` (checked: strings, no duplicates)."""
    if classes is not None:
        if not all(isinstance(c, str) for c in classes):
            raise TypeError(f"classes must be strings, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"duplicate names in classes: {classes!r}")
    return {name: i for i, name in enumerate(classes or [])}


class ManifestSampleLoader:
    """Loads the sample of one validated manifest row: decodes its files (through
    :mod:`mmctx.data.media`) and tokenizes its texts, with the output sizes of
    :class:`ManifestDataset` (see there for the item's fields and shapes). A bad file raises
    :class:`ManifestError` naming the manifest line and field; truncation, downmixing and
    resampling are logged once per manifest and reason.

    Args:
        manifest: the manifest's path (for messages).
        tokenizer: tokenizer of the texts (None: the rows have none).
        image_size, preprocessing, sample_rate, max_audio_seconds, max_text_len, text_field,
            image_field, audio_field, caption_field, min_image_size, max_image_pixels: as for
            :class:`ManifestDataset`.

    Raises:
        ValueError: for a size or limit that is not positive.
    """

    def __init__(
        self,
        manifest: Path,
        tokenizer: TextTokenizer | None,
        image_size: int = 64,
        preprocessing: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        text_field: str = "text",
        image_field: str = "image",
        audio_field: str = "audio",
        caption_field: str | None = None,
        min_image_size: int = 8,
        max_image_pixels: int = 50_000_000,
    ) -> None:
        if min_image_size < 1 or max_image_pixels < 1:
            raise ValueError(
                f"min_image_size and max_image_pixels must be positive, got {min_image_size} "
                f"and {max_image_pixels}"
            )
        #: The per-sample preprocessing (shared with inference, see :class:`SampleTransform`).
        self.transform = SampleTransform(
            tokenizer,
            image_size=image_size,
            preprocessing=preprocessing,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            max_text_len=max_text_len,
        )
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.preprocessing = self.transform.preprocessing
        self.sample_rate = sample_rate
        self.max_audio_seconds = max_audio_seconds
        self.max_audio_samples = self.transform.max_audio_samples
        self.max_text_len = max_text_len
        self.text_field = text_field
        self.image_field = image_field
        self.audio_field = audio_field
        self.caption_field = caption_field
        self.min_image_size = min_image_size
        self.max_image_pixels = max_image_pixels
        self._warned: set[str] = set()

    def __call__(self, row: _Row) -> dict[str, Any]:
        """The sample of ``row``: a dict of tensors (see :class:`ManifestDataset`)."""
        item: dict[str, Any] = {"id": row.id, "source": f"{self.manifest.name}:{row.line}"}
        if row.image is not None:
            item["image"] = self.transform.image(self._read_image(row))  # (3, H, W)
        if row.audio is not None:
            item["audio"] = self._load_audio(row)  # (S,)
        if row.text is not None:
            item["text"] = self._encode(row, self.text_field, row.text)  # (T,)
        if row.label is not None:
            item["label"] = row.label
        if row.caption is not None:
            ids = self._encode(row, self.caption_field, row.caption, reserve=2)
            item["caption"] = self.transform.wrap_caption(ids)  # (T,)
            item["caption_text"] = row.caption
        return item

    def check(self, row: _Row) -> None:
        """Decode every file of ``row`` and tokenize its texts once (no resizing,
        resampling or truncation); raises the :class:`ManifestError` of the first problem."""
        if row.image is not None:
            self._read_image(row).close()
        if row.audio is not None:
            self._read_audio(row)
        if row.text is not None:
            self._token_ids(row, self.text_field, row.text)
        if row.caption is not None:
            self._token_ids(row, self.caption_field, row.caption)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _token_ids(self, row: _Row, field: str | None, text: str) -> list[int]:
        assert self.tokenizer is not None
        try:
            ids = self.tokenizer.encode(text)
        except ValueError as error:
            raise _row_error(self.manifest, row.line, field, str(error), "bad text") from error
        if not ids:
            raise _row_error(self.manifest, row.line, field, f"text {text!r} gives no tokens", "no tokens")
        return ids  # the checks of SampleTransform.token_ids, with the row's kinds

    def _encode(self, row: _Row, field: str | None, text: str, reserve: int = 0) -> Tensor:
        ids = self._token_ids(row, field, text)
        limit = self.max_text_len - reserve
        if len(ids) > limit:
            self._warn_once(
                f"text:{field}",
                f"{self.manifest}: field '{field}' truncated to {limit} tokens (first at line "
                f"{row.line}: {len(ids)} tokens); raise max_text_len to keep more",
            )
        return self.transform.truncate_ids(ids, reserve)

    def _read_image(self, row: _Row) -> Image.Image:
        """The row's image as RGB, after the size checks on the header."""
        assert row.image is not None
        try:
            return read_image(
                row.image, self.min_image_size, self.max_image_pixels, draft_size=self.transform.draft_size
            )
        except MediaError as error:
            raise _row_error(self.manifest, row.line, self.image_field, str(error), error.kind) from error

    def _read_audio(self, row: _Row) -> tuple[np.ndarray, int]:
        """The row's samples as (S, channels) float32 and their rate, after the checks."""
        assert row.audio is not None
        try:
            return read_audio(row.audio)
        except MediaError as error:
            raise _row_error(self.manifest, row.line, self.audio_field, str(error), error.kind) from error

    def _load_audio(self, row: _Row) -> Tensor:
        """Shapes: → (S,) float32 at ``sample_rate``, at most ``max_audio_samples`` long."""
        data, rate = self._read_audio(row)
        channels = data.shape[1]
        if channels > 1:
            self._warn_once(
                f"downmix:{channels}",
                f"{self.manifest}: audio downmixed {channels} channels to mono (first at line "
                f"{row.line}); channels are averaged",
            )
        if rate != self.sample_rate:
            self._warn_once(
                f"resample:{rate}",
                f"{self.manifest}: audio resampled from {rate} Hz to {self.sample_rate} Hz "
                f"(first at line {row.line})",
            )
        wave = self.transform.mono_at_rate(data, rate)  # (S,)
        if wave.shape[0] > self.max_audio_samples:
            self._warn_once(
                "audio",
                f"{self.manifest}: audio truncated to max_audio_seconds={self.max_audio_seconds} "
                f"(first at line {row.line}: {wave.shape[0] / self.sample_rate:.2f} s)",
            )
        return self.transform.truncate_audio(wave)


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
