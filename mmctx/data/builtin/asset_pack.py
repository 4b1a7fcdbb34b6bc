"""Read access to the committed asset pack ``mmctx/data/builtin/assets/default/``.

The pack (built once by ``scripts/build_assets.py``) holds 32 colour pictograms, their
names, every vocabulary word spoken in 4 voices and a word-level tokenizer. This module
only reads it: nothing here needs a font, a speech synthesiser or the network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

__all__ = ["ObjectInfo", "AssetPack", "default_asset_dir", "default_tokenizer_path"]


def default_asset_dir() -> Path:
    """Folder of the asset pack shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / "default"


def default_tokenizer_path() -> Path:
    """The word-level ``tokenizer.json`` of the default asset pack."""
    return default_asset_dir() / "tokenizer.json"


@dataclass(frozen=True)
class ObjectInfo:
    """One pictogram object of the pack.

    Attributes:
        name: singular word, also the pictogram's file stem ("mouse").
        plural: plural word ("mice").
        category: category word ("animals").
        codepoint: the emoji's code point ("U+1F42D").
        unicode_name: the emoji's Unicode name, lower case ("mouse face").
    """

    name: str
    plural: str
    category: str
    codepoint: str
    unicode_name: str


class AssetPack:
    """The asset pack: objects, pictograms and spoken words.

    Args:
        path: the pack's folder; ``None`` is the pack shipped with mmctx.

    Raises:
        FileNotFoundError: naming the missing file when the pack is incomplete.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_asset_dir()
        info = self._read_json("pack.json")
        self.version: int = int(info["version"])
        self.sample_rate: int = int(info["sample_rate"])
        self.categories: tuple[str, ...] = tuple(info["categories"])
        self.voices: tuple[str, ...] = tuple(info["voices"])
        self.vocabulary: tuple[str, ...] = tuple(info["vocabulary"])
        self.objects: tuple[ObjectInfo, ...] = tuple(
            ObjectInfo(**row) for row in self._read_json("objects.json")
        )
        self.by_name: dict[str, ObjectInfo] = {o.name: o for o in self.objects}
        for obj in self.objects:
            if obj.category not in self.categories:
                raise ValueError(
                    f"{self.path / 'objects.json'}: object {obj.name!r} has unknown category "
                    f"{obj.category!r} (pack.json categories: {list(self.categories)})"
                )

    def _read_json(self, name: str):  # noqa: ANN202 - JSON of any shape
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(f"asset pack incomplete: {path} not found")
        return json.loads(path.read_text())

    def objects_of(self, category: str) -> list[ObjectInfo]:
        """The objects of one category, in pack order."""
        return [o for o in self.objects if o.category == category]

    def pictogram(self, name: str) -> Image.Image:
        """The RGBA pictogram of object ``name`` (72x72, loaded fully)."""
        path = self.path / "pictograms" / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"asset pack incomplete: {path} not found")
        with Image.open(path) as im:
            return im.convert("RGBA")

    def word_audio(self, voice: str, word: str) -> np.ndarray:
        """The recording of ``word`` in ``voice``: (S,) float32 at ``self.sample_rate``."""
        path = self.path / "speech" / voice / f"{word}.flac"
        if not path.is_file():
            raise FileNotFoundError(
                f"asset pack has no recording of {word!r} in voice {voice!r}: {path} not found"
            )
        audio, rate = sf.read(path, dtype="float32", always_2d=False)
        if rate != self.sample_rate or audio.ndim != 1:
            raise ValueError(
                f"{path}: expected mono {self.sample_rate} Hz, got {rate} Hz, shape {audio.shape}"
            )
        return audio

    def fingerprint(self) -> str:
        """SHA-256 over the files the generator reads (names and bytes).

        Covers ``pack.json``, ``objects.json``, ``pictograms/`` and ``speech/``; the licence
        notes and the tokenizer do not change generated data, so they are left out.
        """
        return _fingerprint(str(self.path.resolve()))


@lru_cache(maxsize=4)
def _fingerprint(path: str) -> str:
    root = Path(path)
    digest = hashlib.sha256()
    used = [root / "pack.json", root / "objects.json"]
    used += sorted((root / "pictograms").rglob("*")) + sorted((root / "speech").rglob("*"))
    for p in used:
        if p.is_file():
            digest.update(p.relative_to(root).as_posix().encode() + b"\0")
            digest.update(p.read_bytes())
    return digest.hexdigest()
