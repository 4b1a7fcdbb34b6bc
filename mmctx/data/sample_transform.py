"""The per-sample preprocessing shared by the data sets and by inference.

:class:`SampleTransform` turns one decoded input — a PIL image, an audio array and its rate,
a text — into the tensor the model reads. :class:`~mmctx.data.manifest.ManifestDataset`,
:class:`~mmctx.data.coco.CocoCaptionDataset` and :class:`~mmctx.data.inference.InputEncoder`
all go through it, so training, evaluation and inference preprocess alike.

Images follow one of two recipes:

- ``preprocessing=None`` (default): squash-resize to ``image_size`` x ``image_size`` and
  normalise with ImageNet statistics (:func:`mmctx.data.media.image_transform`);
- a ``preprocessing`` dict in the vocabulary of :mod:`mmctx.encoders.preprocessing` (what
  ``TimmImageEncoder.preprocessing`` / ``HFVisionEncoder.preprocessing`` report:
  ``image_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``), applied
  with :func:`mmctx.encoders.preprocessing.image_transform`, the pretrained tower's own recipe.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmctx.data.media import downmix, image_transform, resample
from mmctx.data.tokenization import TextTokenizer

__all__ = ["SampleTransform", "normalize_preprocessing"]

#: Keys of a preprocessing dict and the defaults of the optional ones.
_PREPROCESSING_DEFAULTS: dict[str, Any] = {"interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}
_PREPROCESSING_KEYS = ("image_size", "mean", "std", *_PREPROCESSING_DEFAULTS)


def normalize_preprocessing(preprocessing: dict[str, Any] | None) -> dict[str, Any] | None:
    """A checked, complete, JSON-able copy of an image ``preprocessing`` dict (None stays None).

    ``image_size`` may be an int (square) or ``[H, W]``; ``mean`` and ``std`` are required
    (three numbers); ``interpolation`` defaults to "bilinear", ``crop_pct`` to 1.0 and
    ``crop_mode`` to "squash" (no crop).

    Raises:
        ValueError: for an unknown key, a missing required key or a malformed value.
    """
    if preprocessing is None:
        return None
    if not isinstance(preprocessing, dict):
        raise ValueError(f"preprocessing must be a dict, got {type(preprocessing).__name__}")
    unknown = sorted(set(preprocessing) - set(_PREPROCESSING_KEYS))
    missing = [k for k in ("image_size", "mean", "std") if k not in preprocessing]
    if unknown or missing:
        raise ValueError(
            f"preprocessing: unknown keys {unknown}, missing keys {missing}; expected {list(_PREPROCESSING_KEYS)} "
            "(image_size, mean and std required), e.g. the image encoder's .preprocessing"
        )
    size = preprocessing["image_size"]
    size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    out = {**_PREPROCESSING_DEFAULTS, **preprocessing}
    out["image_size"] = list(size)
    out["mean"] = [float(v) for v in out["mean"]]
    out["std"] = [float(v) for v in out["std"]]
    out["crop_pct"] = float(out["crop_pct"])
    out["interpolation"] = str(out["interpolation"])
    if len(size) != 2 or min(size) < 1 or len(out["mean"]) != 3 or len(out["std"]) != 3:
        raise ValueError(f"preprocessing: image_size must be one or two positive ints and mean/std 3 numbers, got {preprocessing}")
    if out["crop_mode"] not in ("center", "squash") or not 0.0 < out["crop_pct"] <= 1.0:
        raise ValueError(f"preprocessing: crop_mode must be 'center' or 'squash' and crop_pct in (0, 1], got {preprocessing}")
    return out


class SampleTransform:
    """One sample's inputs → model-ready tensors (images, audio, text), as the data sets load them.

    Shapes:
        - :meth:`image`: PIL RGB image → (3, H, W) float32, (H, W) = :attr:`output_size`.
        - :meth:`audio`: (S0, C) or (S0,) samples at ``rate`` → (S,) float32 at ``sample_rate``,
          S ≤ ``max_audio_seconds * sample_rate``.
        - :meth:`text`: str → (T,) long ids, no special tokens, T ≤ ``max_text_len``.
        - :meth:`caption`: str → (T,) long ``[bos] ... [eos]`` ids, T ≤ ``max_text_len``.

    Args:
        tokenizer: tokenizer of the texts (None: no text).
        image_size: side of the square images of the default recipe, in pixels.
        preprocessing: an image preprocessing dict (see the module docstring), or None for
            the default recipe.
        sample_rate: output audio sample rate, in Hz.
        max_audio_seconds: longer audio is truncated to this length.
        max_text_len: longer token sequences are truncated to this many tokens.

    Raises:
        ValueError: for a size or limit that is not positive, or a malformed preprocessing dict.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer | None = None,
        image_size: int = 64,
        preprocessing: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
    ) -> None:
        if image_size < 1 or sample_rate < 1 or max_audio_seconds <= 0 or max_text_len < 1:
            raise ValueError("image_size, sample_rate, max_audio_seconds and max_text_len must be positive")
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.preprocessing = normalize_preprocessing(preprocessing)
        self.sample_rate = sample_rate
        self.max_audio_seconds = max_audio_seconds
        self.max_audio_samples = int(round(max_audio_seconds * sample_rate))
        self.max_text_len = max_text_len
        if self.preprocessing is None:
            self._image_transform = image_transform(image_size)
        else:
            from mmctx.encoders.preprocessing import image_transform as preprocessing_transform

            self._image_transform = preprocessing_transform(self.preprocessing)

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the output images."""
        if self.preprocessing is None:
            return (self.image_size, self.image_size)
        return tuple(self.preprocessing["image_size"])  # type: ignore[return-value]

    @property
    def draft_size(self) -> int:
        """Smallest side a JPEG may be decoded at (PIL's ``draft``) and still feed the resize."""
        if self.preprocessing is None:
            return self.image_size
        return max(math.floor(s / self.preprocessing["crop_pct"]) for s in self.preprocessing["image_size"])

    # ------------------------------------------------------------------ images

    def image(self, image: Image.Image) -> Tensor:
        """Shapes: an RGB PIL image → (3, H, W) float32."""
        return self._image_transform(image)

    # ------------------------------------------------------------------ audio

    def mono_at_rate(self, data: np.ndarray | Tensor, rate: int) -> Tensor:
        """Shapes: (S0, C) or (S0,) samples at ``rate`` → (S,) float32 at ``sample_rate``
        (channels averaged, resampled with torchaudio), not truncated."""
        array = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
        array = array.astype(np.float32, copy=False)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {tuple(array.shape)}")
        wave = downmix(array)  # (S0,)
        if rate != self.sample_rate:
            wave = resample(wave, rate, self.sample_rate)
        return wave

    def truncate_audio(self, wave: Tensor) -> Tensor:
        """Shapes: (S,) → (min(S, max_audio_samples),), contiguous."""
        return wave[: self.max_audio_samples].contiguous()

    def audio(self, data: np.ndarray | Tensor, rate: int) -> Tensor:
        """Shapes: (S0, C) or (S0,) samples at ``rate`` → (S,) float32 at ``sample_rate``."""
        return self.truncate_audio(self.mono_at_rate(data, rate))

    # ------------------------------------------------------------------ text

    def token_ids(self, text: str) -> list[int]:
        """The tokenizer's ids of ``text`` (no special tokens, not truncated).

        Raises:
            ValueError: no tokenizer, a text that is not a non-empty string, or no tokens.
        """
        if self.tokenizer is None:
            raise ValueError("no tokenizer: this data loads no text")
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ValueError(f"text {text!r} gives no tokens")
        return ids

    def truncate_ids(self, ids: list[int], reserve: int = 0) -> Tensor:
        """Shapes: ids → (T,) long, T ≤ ``max_text_len - reserve``."""
        return torch.tensor(ids[: self.max_text_len - reserve], dtype=torch.long)

    def text(self, text: str) -> Tensor:
        """Shapes: str → (T,) long ids, T ≤ ``max_text_len``."""
        return self.truncate_ids(self.token_ids(text))

    def wrap_caption(self, ids: Tensor) -> Tensor:
        """Shapes: (T,) → (T + 2,) long, ``[bos] + ids + [eos]``."""
        assert self.tokenizer is not None and self.tokenizer.bos_id is not None and self.tokenizer.eos_id is not None
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        return torch.cat([torch.tensor([bos]), ids, torch.tensor([eos])])

    def caption(self, text: str) -> Tensor:
        """Shapes: str → (T,) long ``[bos] ... [eos]`` ids, T ≤ ``max_text_len``."""
        return self.wrap_caption(self.truncate_ids(self.token_ids(text), reserve=2))
