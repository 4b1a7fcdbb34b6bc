"""Media decoding: image and audio files read, checked and turned into model-ready tensors.

Nothing here knows about manifests: a bad file raises :class:`MediaError` with a short,
stable ``kind`` and a reason that names the file; the data sets add where the file came
from (manifest line and field, caption-file entry).

- Images: :func:`read_image` checks the size from the header before anything is decoded
  (``min_size`` / ``max_pixels``), decodes JPEGs at a reduced scale when that still covers
  the output size, and returns RGB with transparency composited on white
  (:func:`composite_on_white`); :func:`image_transform` resizes and normalises it to a
  (3, H, W) float tensor with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
- Audio: :func:`read_audio` returns the samples (S, C) float32 and their rate, after the
  content checks (undecodable, truncated WAV, no samples, NaN/Inf); :func:`downmix` averages
  the channels to (S,) and :func:`resample` changes the rate (torchaudio).
"""

from __future__ import annotations

import os
import struct
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MediaError",
    "composite_on_white",
    "downmix",
    "image_transform",
    "read_audio",
    "read_image",
    "resample",
    "wav_truncation",
]

#: Images are normalised with ImageNet statistics: ``(x - mean) / std`` per channel.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class MediaError(ValueError):
    """A media file cannot be used; the message names the file and the reason.

    Attributes:
        kind: a short, stable key of the reason: "unreadable image", "image too small",
            "image too large", "unreadable audio", "truncated audio", "no audio samples",
            "non-finite audio".
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.kind))


# ----------------------------------------------------------------------------- images


def composite_on_white(image: Image.Image) -> Image.Image:
    """``image`` as RGB; transparent pixels (RGBA, LA, or a palette with transparency) are
    composited on white first."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(
    path: str | Path | IO[bytes],
    min_image_size: int = 1,
    max_image_pixels: int | None = None,
    draft_size: int | None = None,
) -> Image.Image:
    """The image at ``path`` as RGB, after the size checks on the header (nothing is decoded
    before them).

    Args:
        path: the image file, or an open binary file (e.g. the bytes of a shard's sample).
        min_image_size: smallest allowed side, in pixels.
        max_image_pixels: largest allowed width x height (None: PIL's own limit only).
        draft_size: a JPEG is decoded at 1/2..1/8 scale if that still covers
            ``draft_size`` x ``draft_size`` (PIL's ``draft``); None: full scale.

    Raises:
        MediaError: "unreadable image", "image too small" or "image too large".
    """

    def unreadable(error: Exception) -> MediaError:
        return MediaError(f"cannot read image {path}: {type(error).__name__}: {error}", "unreadable image")

    try:
        im = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as error:  # PIL's own limit (~179 Mpixels)
        raise MediaError(f"image too large: {error}", "image too large") from error
    except Exception as error:  # UnidentifiedImageError, OSError, ...
        raise unreadable(error) from error
    with im:
        width, height = im.size
        if min(width, height) < min_image_size:
            raise MediaError(
                f"image too small: {width}x{height} pixels, a side below min_image_size="
                f"{min_image_size}: {path}",
                "image too small",
            )
        if max_image_pixels is not None and width * height > max_image_pixels:
            raise MediaError(
                f"image too large: {width}x{height} = {width * height} pixels > "
                f"max_image_pixels={max_image_pixels} (not decoded): {path}",
                "image too large",
            )
        try:
            if draft_size is not None and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            return composite_on_white(im)
        except Exception as error:  # PIL raises OSError (truncated), ValueError, SyntaxError...
            raise unreadable(error) from error


def image_transform(image_size: int) -> Any:
    """The torchvision v2 pipeline of the data sets: a PIL RGB image → (3, H, W) float,
    scaled to [0, 1], resized to ``image_size`` square (aspect ratio not kept) and
    normalised with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize((image_size, image_size), antialias=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )


# ----------------------------------------------------------------------------- audio


def read_audio(path: str | Path | IO[bytes]) -> tuple[np.ndarray, int]:
    """The samples of the audio file at ``path`` (or of an open binary file, e.g. the bytes of
    a shard's sample) as (S, C) float32 and their rate, after the content checks.

    Raises:
        MediaError: "unreadable audio", "truncated audio" (a WAV whose data chunk declares
            more bytes than the file holds: libsndfile reads what is there without
            complaint), "no audio samples" or "non-finite audio" (NaN/Inf samples).
    """
    if hasattr(path, "seek"):
        path.seek(0)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (S, C)
    except Exception as error:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise MediaError(
            f"cannot read audio {path}: {type(error).__name__}: {error}", "unreadable audio"
        ) from error
    cut = wav_truncation(path)
    if cut is not None:
        raise MediaError(f"truncated audio file {path}: {cut}", "truncated audio")
    if data.shape[0] == 0:
        raise MediaError(f"audio has no samples: {path}", "no audio samples")
    finite = np.isfinite(data)
    if not finite.all():
        raise MediaError(
            f"audio has {int((~finite).sum())} NaN/Inf samples: {path}", "non-finite audio"
        )
    return data, int(rate)


def downmix(data: np.ndarray) -> Tensor:
    """Shapes: data (S, C) → (S,) float tensor, the channels averaged."""
    return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))


def resample(wave: Tensor, rate: int, new_rate: int) -> Tensor:
    """``wave`` at ``rate`` Hz resampled to ``new_rate`` Hz (``torchaudio.functional.resample``).

    Shapes: wave (..., S) → (..., S'), S' ≈ S * new_rate / rate.
    """
    import torchaudio.functional as AF

    return AF.resample(wave, rate, new_rate)


def wav_truncation(path: str | Path | IO[bytes]) -> str | None:
    """For a RIFF/WAVE file (a path or an open binary file) whose ``data`` chunk declares more
    bytes than the file holds, a description of the cut; else ``None`` (also for other
    formats, which their decoders check). Sizes 0 and 0xFFFFFFFF mean "unknown" (streamed
    WAVs) and are accepted."""
    opened = hasattr(path, "read")
    with nullcontext(path) if opened else open(path, "rb") as handle:  # type: ignore[arg-type]
        size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
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
