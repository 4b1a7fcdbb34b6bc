#!/usr/bin/env python
"""Build the committed asset pack ``mmctx/data/builtin/assets/default/`` (run once; output committed).

The pack is everything the embedded default data set (:mod:`mmctx.data.builtin.scenes`) needs,
so that nothing at run time needs apt, a font or a speech synthesiser:

- ``pictograms/<name>.png``: 32 Noto Color Emoji glyphs (4 categories x 8 objects), 72x72
  RGBA, cropped to the glyph, padded to square.
- ``objects.json``: ``[{name, plural, category, codepoint, unicode_name}, ...]``.
- ``speech/<voice>/<word>.flac``: every vocabulary word spoken by espeak-ng in 4 voices,
  16 kHz mono 16-bit FLAC, silence trimmed, peak-normalised to -6 dBFS.
- ``speech/voices.json``: voice folder -> espeak-ng voice, pitch and speed.
- ``tokenizer.json``: a Hugging Face ``tokenizers`` WordLevel tokenizer over the vocabulary.
- ``pack.json``: version, sample rate, categories, vocabulary, voices.
- ``LICENSE-assets.md``: licences and how to rebuild.

Needs (build time only) Debian ``fonts-noto-color-emoji`` and ``espeak-ng``, and PyPI
``fonttools`` (``pip install -e .[assets]``). Usage::

    python scripts/build_assets.py [--out mmctx/data/builtin/assets/default]

The script is deterministic and idempotent: it builds into a temporary folder beside the
output and swaps it in, so a rerun with the same tools gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from PIL import Image, ImageDraw, ImageFont

PACK_VERSION = 1
FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # Noto Color Emoji is a bitmap (CBDT) font: 109 is its only size.
PICTOGRAM_SIZE = 72
SAMPLE_RATE = 16_000
ESPEAK_SPEED = 160
PEAK = 0.5  # -6 dBFS: leaves headroom for the +3 dB gain the generator may apply.
TRIM_DB = 35.0  # frames quieter than peak frame RMS - TRIM_DB are silence
TRIM_FRAME = 160  # 10 ms at 16 kHz
TRIM_MARGIN_FRAMES = 1

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "mmctx" / "data" / "builtin" / "assets" / "default"

#: category -> [(name, plural, emoji)]
OBJECTS: dict[str, list[tuple[str, str, str]]] = {
    "animals": [
        ("dog", "dogs", "\U0001f436"),
        ("cat", "cats", "\U0001f431"),
        ("cow", "cows", "\U0001f42e"),
        ("pig", "pigs", "\U0001f437"),
        ("horse", "horses", "\U0001f434"),
        ("rabbit", "rabbits", "\U0001f430"),
        ("mouse", "mice", "\U0001f42d"),
        ("frog", "frogs", "\U0001f438"),
    ],
    "food": [
        ("apple", "apples", "\U0001f34e"),
        ("banana", "bananas", "\U0001f34c"),
        ("pizza", "pizzas", "\U0001f355"),
        ("cake", "cakes", "\U0001f370"),
        ("strawberry", "strawberries", "\U0001f353"),
        ("lemon", "lemons", "\U0001f34b"),
        ("carrot", "carrots", "\U0001f955"),
        ("burger", "burgers", "\U0001f354"),
    ],
    "vehicles": [
        ("car", "cars", "\U0001f697"),
        ("bus", "buses", "\U0001f68c"),
        ("bike", "bikes", "\U0001f6b2"),
        ("plane", "planes", "\u2708"),  # renders in colour in Noto Color Emoji (checked)
        ("train", "trains", "\U0001f682"),
        ("helicopter", "helicopters", "\U0001f681"),
        ("boat", "boats", "\u26f5"),
        ("tractor", "tractors", "\U0001f69c"),
    ],
    "plants": [
        ("tree", "trees", "\U0001f332"),
        ("cactus", "cacti", "\U0001f335"),
        ("sunflower", "sunflowers", "\U0001f33b"),
        ("tulip", "tulips", "\U0001f337"),
        ("rose", "roses", "\U0001f339"),
        ("mushroom", "mushrooms", "\U0001f344"),
        ("palm", "palms", "\U0001f334"),
        ("clover", "clovers", "\U0001f340"),
    ],
}

#: Words of the spoken questions ("what animals"; earlier versions: "what is on the left") and captions ("two dogs and an apple").
FUNCTION_WORDS: tuple[str, ...] = (
    "a", "an", "and", "two", "three", "how", "many", "with",
    "what", "is", "on", "in", "the", "left", "middle", "right",
)
#: Punctuation the tokenizer knows (captions use " , "); not spoken.
PUNCTUATION: tuple[str, ...] = (",", ".", "?")
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice of the pack."""

    folder: str
    espeak: str
    pitch: int


VOICES: tuple[Voice, ...] = (
    Voice("en-us", "en-us", 50),
    Voice("en-gb", "en-gb", 40),
    Voice("en-us-f3", "en-us+f3", 60),
    Voice("en-gb-scotland-m3", "en-gb-scotland+m3", 35),
)


def vocabulary() -> list[str]:
    """Every spoken word of the pack, sorted (object names, plurals, categories, function words)."""
    words: set[str] = set(FUNCTION_WORDS) | set(OBJECTS)
    for entries in OBJECTS.values():
        for name, plural, _ in entries:
            words.update((name, plural))
    return sorted(words)


def render_pictogram(font: ImageFont.FreeTypeFont, char: str) -> Image.Image:
    """Render one emoji as a ``PICTOGRAM_SIZE`` square RGBA image.

    Raises:
        RuntimeError: if the glyph is blank or not in colour (the font lacks it).
    """
    canvas = Image.new("RGBA", (192, 192), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((24, 24), char, font=font, embedded_color=True)
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        raise RuntimeError(f"U+{ord(char):04X} renders blank with {FONT_PATH}")
    glyph = canvas.crop(bbox)
    w, h = glyph.size
    side = max(w, h)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - w) // 2, (side - h) // 2))
    out = square.resize((PICTOGRAM_SIZE, PICTOGRAM_SIZE), Image.Resampling.LANCZOS)
    rgba = np.asarray(out)
    opaque = rgba[..., 3] > 128
    rgb = rgba[..., :3][opaque].astype(np.int32)
    # A colour glyph has pixels whose channels differ; a monochrome fallback does not.
    chroma = (rgb.max(axis=1) - rgb.min(axis=1)).mean() if len(rgb) else 0.0
    if chroma < 10:
        raise RuntimeError(f"U+{ord(char):04X} does not render in colour (chroma {chroma:.1f})")
    return out


def espeak(word: str, voice: Voice) -> tuple[np.ndarray, int]:
    """Speak ``word`` with espeak-ng; returns (mono float32 samples, sample rate)."""
    cmd = [
        "espeak-ng",
        "-v",
        voice.espeak,
        "-s",
        str(ESPEAK_SPEED),
        "-p",
        str(voice.pitch),
        "--stdout",
        word,
    ]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """Cut leading/trailing frames whose RMS is ``TRIM_DB`` below the loudest frame."""
    n_frames = len(audio) // TRIM_FRAME
    frames = audio[: n_frames * TRIM_FRAME].reshape(n_frames, TRIM_FRAME)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    threshold = max(rms.max() * 10 ** (-TRIM_DB / 20), 1e-5)
    loud = np.flatnonzero(rms > threshold)
    if len(loud) == 0:
        raise RuntimeError("espeak-ng produced silence")
    start = max(loud[0] - TRIM_MARGIN_FRAMES, 0) * TRIM_FRAME
    stop = min((loud[-1] + 1 + TRIM_MARGIN_FRAMES) * TRIM_FRAME, len(audio))
    return audio[start:stop]


def speak_word(word: str, voice: Voice) -> np.ndarray:
    """The pack's recording of ``word``: 16 kHz, trimmed, peak-normalised float32."""
    audio, rate = espeak(word, voice)
    if rate != SAMPLE_RATE:
        audio = AF.resample(torch.from_numpy(audio), rate, SAMPLE_RATE).numpy()
    audio = trim_silence(audio)
    return (audio * (PEAK / float(np.abs(audio).max()))).astype(np.float32)


def build_tokenizer(words: list[str], path: Path) -> None:
    """Write a WordLevel ``tokenizer.json`` with the special tokens at ids 0..4."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for tok in list(words) + list(PUNCTUATION):
        vocab.setdefault(tok, len(vocab))
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    for i, tok in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(tok) == i, (tok, tokenizer.token_to_id(tok))
    tokenizer.save(str(path), pretty=True)


def font_copyright() -> str:
    """The font's copyright and version lines, from its ``name`` table."""
    from fontTools.ttLib import TTFont

    names = TTFont(FONT_PATH)["name"]
    return f"{names.getDebugName(0)} (Noto Color Emoji, {names.getDebugName(5)})"


def license_text(copyright_line: str, espeak_version: str) -> str:
    """Contents of ``LICENSE-assets.md``."""
    return f"""# Licences of the default asset pack

## Pictograms (`pictograms/*.png`)

Rendered from the Noto Color Emoji font (Debian package `fonts-noto-color-emoji`):
{copyright_line}.

The font, and these images derived from its glyphs, are licensed under the SIL Open Font
License, Version 1.1 (OFL-1.1, https://openfontlicense.org). The font is distributed on an
"AS IS" basis, without warranties or conditions of any kind. The object names in
`objects.json` come from Python's `unicodedata` (Unicode character names).

## Speech (`speech/*/*.flac`)

Synthesised with espeak-ng (Debian package `espeak-ng`):
{espeak_version}.

espeak-ng is a GPL-3.0 program; the audio it produces is not covered by its licence and
is distributed here under the licence of mmctx (Apache-2.0).

## Tokenizer (`tokenizer.json`)

A word-level vocabulary written by `scripts/build_assets.py`; Apache-2.0 like mmctx.

## Rebuilding

```
apt-get install espeak-ng fonts-noto-color-emoji
pip install -e .[assets]          # fonttools
python scripts/build_assets.py    # writes mmctx/data/builtin/assets/default/
```

The build is deterministic: rerunning it with the same font and espeak-ng gives identical
files (see `pack.json` for the tool versions used).
"""


def build(out: Path) -> dict[str, object]:
    """Build the whole pack into ``out`` (replaced atomically); returns ``pack.json``'s data."""
    if not FONT_PATH.exists():
        sys.exit(f"{FONT_PATH} not found: apt-get install fonts-noto-color-emoji")
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found: apt-get install espeak-ng")
    torch.set_num_threads(1)  # resampling results must not depend on thread count
    espeak_version = (
        subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
        .stdout.split(" Data at:")[0]
        .strip()
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        font = ImageFont.truetype(str(FONT_PATH), FONT_SIZE)
        (tmp / "pictograms").mkdir()
        objects = []
        for category, entries in OBJECTS.items():
            for name, plural, char in entries:
                render_pictogram(font, char).save(tmp / "pictograms" / f"{name}.png")
                objects.append(
                    {
                        "name": name,
                        "plural": plural,
                        "category": category,
                        "codepoint": f"U+{ord(char):04X}",
                        "unicode_name": unicodedata.name(char).lower(),
                    }
                )
        (tmp / "objects.json").write_text(json.dumps(objects, indent=1) + "\n")

        words = vocabulary()
        durations: list[float] = []
        for voice in VOICES:
            folder = tmp / "speech" / voice.folder
            folder.mkdir(parents=True)
            for word in words:
                audio = speak_word(word, voice)
                durations.append(len(audio) / SAMPLE_RATE)
                sf.write(
                    folder / f"{word}.flac", audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC"
                )
        voices = {
            v.folder: {"espeak_voice": v.espeak, "pitch": v.pitch, "speed": ESPEAK_SPEED}
            for v in VOICES
        }
        (tmp / "speech" / "voices.json").write_text(json.dumps(voices, indent=1) + "\n")

        build_tokenizer(words, tmp / "tokenizer.json")
        copyright_line = font_copyright()
        (tmp / "LICENSE-assets.md").write_text(license_text(copyright_line, espeak_version))
        pack = {
            "version": PACK_VERSION,
            "sample_rate": SAMPLE_RATE,
            "pictogram_size": PICTOGRAM_SIZE,
            "categories": list(OBJECTS),
            "voices": [v.folder for v in VOICES],
            "vocabulary": words,
            "tools": {"font": copyright_line, "espeak": espeak_version},
        }
        (tmp / "pack.json").write_text(json.dumps(pack, indent=1) + "\n")

        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            digest.update(p.relative_to(out).as_posix().encode())
            digest.update(p.read_bytes())
    print(
        f"wrote {out}: {len(objects)} pictograms, {len(words)} words x {len(VOICES)} voices "
        f"(mean {np.mean(durations):.2f} s), {size / 1e6:.2f} MB, sha256 {digest.hexdigest()[:16]}"
    )
    return pack


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    build(args.out.resolve())


if __name__ == "__main__":
    main()
