"""Fixtures of the data tests: writers of small image, audio and manifest files (the small
default data set is `default_root` in tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

def write_image(
    path: Path,
    size: tuple[int, int] = (20, 12),
    color: tuple[int, int, int] = (255, 255, 255),
    mode: str = "RGB",
) -> Path:
    """A plain image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = color if mode != "RGBA" else (*color, 0)
    Image.new(mode, size, fill).save(path)
    return path


def write_audio(
    path: Path,
    samples: int = 1600,
    rate: int = 16000,
    channels: int = 1,
    value: float | tuple[float, ...] = 0.25,
) -> Path:
    """An audio file of constant value(s) per channel (a constant is easy to check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = value if isinstance(value, tuple) else (value,) * channels
    data = np.tile(np.asarray(values, dtype=np.float32), (samples, 1))
    sf.write(path, data if channels > 1 else data[:, 0], rate, subtype="PCM_16")
    return path


def write_manifest(path: Path, rows: list[dict | str]) -> Path:
    """A JSONL file; a ``str`` row is written verbatim (for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


class DataFiles:
    """The file writers above, as a fixture (test modules need not import conftest)."""

    image = staticmethod(write_image)
    audio = staticmethod(write_audio)
    manifest = staticmethod(write_manifest)


@pytest.fixture
def data_files() -> type[DataFiles]:
    """Writers of small image, audio and manifest files."""
    return DataFiles


@pytest.fixture
def small_manifest(tmp_path: Path) -> Callable[[list[dict | str]], Path]:
    """Write ``rows`` as ``tmp_path/m/train.jsonl`` beside a valid image and audio file.

    The files are ``images/a.png`` (20x12 white) and ``audio/a.wav`` (0.1 s, 16 kHz).
    """
    root = tmp_path / "m"
    write_image(root / "images" / "a.png")
    write_audio(root / "audio" / "a.wav")

    def make(rows: list[dict | str]) -> Path:
        return write_manifest(root / "train.jsonl", rows)

    return make
