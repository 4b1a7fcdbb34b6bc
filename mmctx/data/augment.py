"""Training-time data augmentation for text, images and audio, seeded per sample and epoch.

Each modality has a small configuration dataclass (every option off by default), gathered
in :class:`Augmentation`, which data modules take as ``augment`` — so it reads in YAML as::

    data:
      init_args:
        augment:
          seed: 0
          image: {crop_scale_min: 0.8, brightness: 0.2, contrast: 0.2, rotation_degrees: 5}
          text: {delete_prob: 0.1, swap_prob: 0.1, char_noise_prob: 0.02}
          audio: {time_mask_seconds: 0.2, freq_mask_bins: 20, snr_db: [15, 30], speed: [0.9, 1.1], gain_db: 6}

or on the command line as ``--data.augment.image.rotation_degrees=5``. Augmentation is
applied to the *training* split only (validation, test and predict data are never changed),
by :class:`AugmentedDataset`, which wraps a :class:`~mmctx.data.manifest.ManifestDataset`.

Randomness: sample ``i`` in pass ``e`` over the training data is augmented under the seed
``f(seed, e, i)`` (torch's RNG forked, so nothing else is disturbed). The result is the same
whatever the number of DataLoader workers or the order in which they load, differs from
epoch to epoch, and repeats exactly in a rerun. The pass counter lives in shared memory and
is advanced by :class:`~mmctx.data.loaders.EpochDataLoader` each time an epoch's iteration
starts (it restarts at 0 in a resumed run).

Horizontal flips are **off by default and wrong for captions of the default data**: its
captions list the objects left to right, so mirroring the picture changes the caption unless
it is reversed too (its classification label, the object of the asked category, does not
depend on left and right). Enable ``hflip_prob`` only for targets that do not depend on left
and right.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmctx.data.media import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "Augmentation",
    "AudioAugment",
    "AugmentedDataset",
    "ImageAugment",
    "TextAugment",
]

_LETTERS = string.ascii_lowercase


def _rand() -> float:
    return float(torch.rand(()))


@dataclass(frozen=True)
class TextAugment:
    """Word- and character-level noise on the raw text (before tokenization).

    Args:
        delete_prob: each word is dropped with this probability (one word always stays).
        swap_prob: each pair of neighbouring words is swapped with this probability.
        char_noise_prob: each character of a word is replaced by a random lowercase letter
            with this probability (a word-level tokenizer then sees an unknown word).
    """

    delete_prob: float = 0.0
    swap_prob: float = 0.0
    char_noise_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("delete_prob", "swap_prob", "char_noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TextAugment: {name} must be in [0, 1], got {getattr(self, name)}")

    def __call__(self, text: str) -> str:
        """Noisy ``text`` (torch's global RNG)."""
        words = text.split()
        if self.delete_prob > 0 and len(words) > 1:
            kept = [w for w in words if _rand() >= self.delete_prob]
            words = kept or [words[int(torch.randint(len(words), ()))]]
        if self.swap_prob > 0:
            i = 0
            while i < len(words) - 1:
                if _rand() < self.swap_prob:
                    words[i], words[i + 1] = words[i + 1], words[i]
                    i += 1  # a word moves at most one place
                i += 1
        if self.char_noise_prob > 0:
            words = [
                "".join(_LETTERS[int(torch.randint(26, ()))] if _rand() < self.char_noise_prob else c for c in w)
                for w in words
            ]
        return " ".join(words)


@dataclass(frozen=True)
class ImageAugment:
    """Image augmentation with torchvision transforms v2, on the data set's normalised images
    (they are un-normalised to [0, 1], transformed, clamped and normalised again).

    Args:
        crop_scale_min: ``RandomResizedCrop`` keeps between this fraction of the area and all
            of it (aspect ratio 3/4 .. 4/3), resized back to the same size; 1.0: off.
        hflip_prob: horizontal flip probability. Off by default: on the default data it
            changes left-to-right captions; see the module docstring.
        brightness: ``ColorJitter`` brightness (0: off); likewise ``contrast``,
            ``saturation`` and ``hue`` (hue <= 0.5).
        contrast: see ``brightness``.
        saturation: see ``brightness``.
        hue: see ``brightness``.
        rotation_degrees: rotate by a uniform angle in ``[-d, d]`` (corners filled white).
        mean: the normalisation mean of the images (ImageNet's, as the data sets use).
        std: the normalisation std of the images.
    """

    crop_scale_min: float = 1.0
    hflip_prob: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    rotation_degrees: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"ImageAugment: crop_scale_min must be in (0, 1], got {self.crop_scale_min}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"ImageAugment: hflip_prob must be in [0, 1], got {self.hflip_prob}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ImageAugment: hue must be in [0, 0.5], got {self.hue}")

    def build(self, size: tuple[int, int]) -> Any:
        """The torchvision v2 pipeline for images of ``size = (H, W)`` in [0, 1]."""
        from torchvision.transforms import v2

        steps: list[Any] = []
        if self.crop_scale_min < 1.0:
            steps.append(v2.RandomResizedCrop(size, scale=(self.crop_scale_min, 1.0), antialias=True))
        if self.hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(self.hflip_prob))
        if self.rotation_degrees > 0:
            steps.append(v2.RandomRotation(self.rotation_degrees, fill=1.0))
        if max(self.brightness, self.contrast, self.saturation, self.hue) > 0:
            steps.append(v2.ColorJitter(self.brightness, self.contrast, self.saturation, self.hue))
        return v2.Compose(steps) if steps else None

    def __call__(self, image: Tensor) -> Tensor:
        """Shapes: image (3, H, W) normalised float → the same shape and dtype."""
        pipeline = self.build(tuple(image.shape[-2:]))
        if pipeline is None:
            return image
        mean = torch.tensor(self.mean, dtype=image.dtype)[:, None, None]  # (3, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype)[:, None, None]
        x = (image * std + mean).clamp(0.0, 1.0)  # (3, H, W) in [0, 1]
        x = pipeline(x).clamp(0.0, 1.0)
        return ((x - mean) / std).to(image.dtype)


@dataclass(frozen=True)
class AudioAugment:
    """Waveform augmentation with torchaudio, in this order: speed, gain, noise, masking.

    Args:
        sample_rate: the waveforms' sample rate in Hz.
        speed: play-back speed factor drawn uniformly from ``[low, high]`` (resampling, so
            pitch moves too; the length changes by ``1/factor``); ``[1, 1]``: off.
        gain_db: gain drawn uniformly from ``[-gain_db, gain_db]`` dB; 0: off.
        snr_db: white noise added at a signal-to-noise ratio drawn from ``[low, high]`` dB;
            None: off.
        time_mask_seconds: one span of at most this length is zeroed (torchaudio
            ``TimeMasking`` on the waveform); 0: off.
        freq_mask_bins: one band of at most this many STFT bins (n_fft 400) is removed
            (``FrequencyMasking`` on the complex spectrogram, then inverted); 0: off.
    """

    sample_rate: int = 16000
    speed: tuple[float, float] = (1.0, 1.0)
    gain_db: float = 0.0
    snr_db: tuple[float, float] | None = None
    time_mask_seconds: float = 0.0
    freq_mask_bins: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.speed[0] <= self.speed[1]:
            raise ValueError(f"AudioAugment: speed must be [low, high] with 0 < low <= high, got {self.speed}")
        if self.snr_db is not None and self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"AudioAugment: snr_db must be [low, high], got {self.snr_db}")
        if self.gain_db < 0 or self.time_mask_seconds < 0 or self.freq_mask_bins < 0:
            raise ValueError("AudioAugment: gain_db, time_mask_seconds and freq_mask_bins must be >= 0")

    def __call__(self, wave: Tensor) -> Tensor:
        """Shapes: wave (S,) float → (S',) same dtype (S' = S unless ``speed`` is on)."""
        import torchaudio.functional as AF
        import torchaudio.transforms as AT

        dtype, x = wave.dtype, wave.float()
        low, high = self.speed
        if high > low or low != 1.0:
            factor = low + (high - low) * _rand()
            unit = self.sample_rate // 100  # new rates on a 1 % grid keep the resampling kernel small
            new_rate = max(unit, round(self.sample_rate / factor / unit) * unit)
            if new_rate != self.sample_rate:
                x = AF.resample(x, self.sample_rate, new_rate)
        if self.gain_db > 0:
            x = AF.gain(x, (2 * _rand() - 1) * self.gain_db)
        if self.snr_db is not None:
            snr = self.snr_db[0] + (self.snr_db[1] - self.snr_db[0]) * _rand()
            if bool(x.abs().max() > 0):
                x = AF.add_noise(x[None], torch.randn_like(x)[None], torch.tensor([snr]))[0]
        if self.time_mask_seconds > 0:
            span = int(self.time_mask_seconds * self.sample_rate)
            x = AT.TimeMasking(span)(x[None, None])[0, 0]  # (1, 1, S): "time" is the sample axis
        if self.freq_mask_bins > 0 and x.shape[0] >= 400:
            spec = AT.Spectrogram(n_fft=400, hop_length=160, power=None)(x)  # (201, F) complex
            keep = AT.FrequencyMasking(self.freq_mask_bins)(torch.ones(1, *spec.shape))[0]  # 0 in the band
            spec = spec * keep
            x = AT.InverseSpectrogram(n_fft=400, hop_length=160)(spec, length=x.shape[0])
        return x.to(dtype)


@dataclass(frozen=True)
class Augmentation:
    """The training-time augmentation of each modality (None: that modality untouched).

    Args:
        text: word/character noise on the text input.
        image: image transforms.
        audio: waveform transforms.
        seed: base seed of the per-sample, per-epoch randomness.
    """

    text: TextAugment | None = None
    image: ImageAugment | None = None
    audio: AudioAugment | None = None
    seed: int = 0

    @property
    def active(self) -> bool:
        return any(a is not None for a in (self.text, self.image, self.audio))


def _mix(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index) (splitmix-style, so neighbours differ)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    return x & (2**63 - 1)


class AugmentedDataset(Dataset):
    """A data set whose items are augmented, reproducibly per (seed, epoch, index).

    Text is augmented on the raw string of the manifest row and tokenized again (needs a
    :class:`~mmctx.data.manifest.ManifestDataset`-like ``dataset`` with ``rows``,
    ``tokenizer`` and ``max_text_len``); images and audio on the loaded tensors.

    Args:
        dataset: the training data set.
        augmentation: what to apply.
    """

    def __init__(self, dataset: Dataset, augmentation: Augmentation) -> None:
        super().__init__()
        if augmentation.text is not None and not all(hasattr(dataset, a) for a in ("rows", "tokenizer", "max_text_len")):
            raise TypeError(f"AugmentedDataset: text augmentation needs a ManifestDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.augmentation = augmentation
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()  # seen by forked workers

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the randomness of pass ``epoch`` from now on (also in running workers)."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        aug = self.augmentation
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(aug.seed, self.epoch, index))
            if aug.text is not None and "text" in item:
                row = self.dataset.rows[index]  # type: ignore[attr-defined]
                ids = self.dataset.tokenizer.encode(aug.text(row.text))[: self.dataset.max_text_len]  # type: ignore[attr-defined]
                if ids:
                    item["text"] = torch.tensor(ids, dtype=torch.long)
            if aug.image is not None and "image" in item:
                item["image"] = aug.image(item["image"])
            if aug.audio is not None and "audio" in item:
                item["audio"] = aug.audio(item["audio"])
        return item
