"""Inputs for a trained model outside the data modules: files, PIL images, arrays and strings
preprocessed exactly as the training data was, and collated into a
:class:`~mmctx.types.MultimodalBatch`.

A data module's :meth:`inference_state` (stored in every checkpoint by the trainers) holds
what this needs; :meth:`InputEncoder.from_state` rebuilds the preprocessing from it::

    encoder = InputEncoder.from_state(checkpoint["mmctx_data"])
    batch = encoder(images=["photo.jpg", pil_image], texts=["a question", "another"])
    encoder.tokenizer.decode(ids)     # generated ids → text
    encoder.classes[int(k)]           # class index → name

Images and audio go through the same decoding (:mod:`mmctx.data.media`), resize,
normalisation, downmix, resampling and truncation as in the data sets
(:class:`~mmctx.data.sample_transform.SampleTransform`), and the batch is built by
:func:`~mmctx.data.collate.collate_multimodal`, so the model sees the tensors the data
module would give it for the same files. No Lightning here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmctx.data.collate import collate_multimodal
from mmctx.data.media import composite_on_white, read_audio, read_image
from mmctx.data.sample_transform import SampleTransform
from mmctx.data.tokenization import TextTokenizer
from mmctx.types import MultimodalBatch

__all__ = ["InputEncoder"]

#: One image: a path, a PIL image, an (H, W[, C]) uint8/float array or a (C, H, W) tensor.
ImageInput = Any
#: One clip: a path, a (S,) / (S, C) array or tensor at the encoder's ``sample_rate``, or an
#: ``(array, rate)`` pair.
AudioInput = Any


class InputEncoder:
    """Preprocesses raw inputs the way a data module does and collates them into a batch.

    Call it with lists of equal length for any subset of modalities; ``None`` inside a list
    is a missing input for that sample (its mask is False).

    Shapes (B the number of samples):
        - ``inputs["image"]``: (B, 3, H, W) float, mask (B,);
        - ``inputs["audio"]``: (B, S) float at ``sample_rate``, mask (B, S);
        - ``inputs["text"]``: (B, T) long padded with the tokenizer's ``pad_id``, mask (B, T).

    Args:
        modalities: the modalities the model reads ("image", "audio", "text").
        tokenizer: the training data's tokenizer (needed for text).
        classes: the class names, index = class id (None: not a classifier's data).
        image_size: side of the square images of the default recipe.
        preprocessing: the image preprocessing dict, or None (see
            :mod:`mmctx.data.sample_transform`).
        sample_rate: audio sample rate fed to the model, in Hz.
        max_audio_seconds: longer audio is truncated.
        max_text_len: longer token sequences are truncated.
        min_image_size: smallest allowed image side of a file, in pixels.
        max_image_pixels: largest allowed width x height of a file.
    """

    def __init__(
        self,
        modalities: Sequence[str] = ("image", "audio"),
        tokenizer: TextTokenizer | None = None,
        classes: list[str] | None = None,
        image_size: int = 64,
        preprocessing: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        min_image_size: int = 1,
        max_image_pixels: int = 50_000_000,
    ) -> None:
        self.modalities = tuple(modalities)
        self.tokenizer = tokenizer
        self.classes = list(classes) if classes is not None else None
        self.min_image_size = min_image_size
        self.max_image_pixels = max_image_pixels
        #: The data sets' per-sample preprocessing.
        self.transform = SampleTransform(
            tokenizer,
            image_size=image_size,
            preprocessing=preprocessing,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            max_text_len=max_text_len,
        )

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> InputEncoder:
        """The encoder of a data module's :meth:`inference_state` (e.g. ``checkpoint["mmctx_data"]``).

        Raises:
            ValueError: for a state without ``init_args``.
        """
        if not isinstance(state, dict) or not isinstance(state.get("init_args"), dict):
            raise ValueError("InputEncoder.from_state: expected a data module's inference_state() dict with 'init_args'")
        args = state["init_args"]
        tokenizer = None
        if state.get("tokenizer_json"):
            tokenizer = TextTokenizer.from_json(
                state["tokenizer_json"], specials=state.get("tokenizer_specials"), source="<checkpoint>"
            )
        keys = ("image_size", "preprocessing", "sample_rate", "max_audio_seconds", "max_text_len",
                "min_image_size", "max_image_pixels")
        return cls(
            modalities=args.get("modalities") or state.get("modalities") or ("image", "audio", "text"),
            tokenizer=tokenizer,
            classes=state.get("classes"),
            **{k: args[k] for k in keys if args.get(k) is not None},
        )

    @property
    def sample_rate(self) -> int:
        """Audio sample rate fed to the model, in Hz."""
        return self.transform.sample_rate

    @property
    def pad_id(self) -> int:
        """The padding id of the text (0 without a tokenizer)."""
        return self.tokenizer.pad_id if self.tokenizer is not None else 0

    def __call__(
        self,
        images: Sequence[ImageInput | None] | None = None,
        audio: Sequence[AudioInput | None] | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> MultimodalBatch:
        """The batch of the given inputs (any subset of modalities, lists of equal length).

        Raises:
            ValueError: no input, lists of different lengths, a modality the model does not
                read, text without a tokenizer, or an input that cannot be used;
            mmctx.data.media.MediaError: a file that cannot be decoded (names the file).
        """
        given = {name: list(v) for name, v in (("image", images), ("audio", audio), ("text", texts)) if v is not None}
        if not given:
            raise ValueError("InputEncoder: give images, audio or texts")
        lengths = {name: len(v) for name, v in given.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"InputEncoder: the inputs have different lengths: {lengths}")
        unread = [m for m in given if m not in self.modalities]
        if unread:
            raise ValueError(f"InputEncoder: the model reads {list(self.modalities)}, not {unread}")
        if "text" in given and self.tokenizer is None:
            raise ValueError("InputEncoder: texts given, but the data had no tokenizer")
        count = next(iter(lengths.values()))
        if count == 0:
            raise ValueError("InputEncoder: empty input lists")
        items: list[dict[str, Any]] = []
        for b in range(count):
            item: dict[str, Any] = {"id": str(b), "source": f"<input {b}>"}
            for name, values in given.items():
                value = values[b]
                if value is None:
                    continue
                if isinstance(value, (str, Path)) and name != "text":
                    item["source"] = str(value)
                item[name] = self._prepare(name, value)
            items.append(item)
        return collate_multimodal(items, self.pad_id)

    def _prepare(self, name: str, value: Any) -> Tensor:
        if name == "image":
            return self.transform.image(self._image(value))  # (3, H, W)
        if name == "audio":
            data, rate = self._audio(value)
            return self.transform.audio(data, rate)  # (S,)
        if not isinstance(value, str):
            raise ValueError(f"InputEncoder: a text must be a string, got {type(value).__name__}")
        return self.transform.text(value)  # (T,)

    def _image(self, value: ImageInput) -> Image.Image:
        """An RGB PIL image from a path, a PIL image, an array or a tensor."""
        if isinstance(value, (str, Path)):
            return read_image(value, self.min_image_size, self.max_image_pixels, draft_size=self.transform.draft_size)
        if isinstance(value, Image.Image):
            return composite_on_white(value)
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        if isinstance(value, Tensor) and array.ndim == 3 and array.shape[0] in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)  # (C, H, W) → (H, W, C)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"InputEncoder: an image array must be (H, W), (H, W, 3|4) or a (3, H, W) tensor, got {array.shape}")
        if array.dtype != np.uint8:
            if np.issubdtype(array.dtype, np.floating) and array.size and float(array.max()) <= 1.0:
                array = array * 255.0  # floats in [0, 1]
            array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return composite_on_white(Image.fromarray(array))

    def _audio(self, value: AudioInput) -> tuple[np.ndarray | Tensor, int]:
        """(samples, rate) from a path, an ``(array, rate)`` pair or an array at ``sample_rate``."""
        if isinstance(value, (str, Path)):
            return read_audio(value)
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, np.integer)):
            return _float_audio(value[0]), int(value[1])
        return _float_audio(value), self.transform.sample_rate

    def __repr__(self) -> str:
        return (
            f"InputEncoder(modalities={list(self.modalities)}, tokenizer={self.tokenizer!r}, "
            f"classes={None if self.classes is None else len(self.classes)}, output_size={self.transform.output_size}, "
            f"sample_rate={self.transform.sample_rate})"
        )


def _float_audio(data: Any) -> np.ndarray | Tensor:
    if isinstance(data, Tensor):
        return data.detach().cpu().to(torch.float32)
    return np.asarray(data, dtype=np.float32)
