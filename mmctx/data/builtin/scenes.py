"""The embedded default data set: "what animal is in the picture?".

Generated locally from the committed asset pack (:mod:`mmctx.data.builtin.asset_pack`), with no apt
package and no network, so the default training job runs on a fresh machine.

Each sample is a small scene of one to three pictograms from different categories (animals,
food, vehicles, plants; eight objects each), each in its own third of the picture (left,
middle, right), on a varied background, and a spoken question naming a category that is in
the picture: "what animals" / "what food" / "what vehicles" / "what plants". The label is
the *object* of the asked category (one of 32 names: "dog", "pizza", "bus", ...), so with two
or three objects it needs both the image and the question: the picture alone cannot tell
which of its objects is asked about (about 0.61 at best over the mix of 1, 2 and 3 objects),
the question alone narrows the answer to the eight objects of its category (0.125). One-object
scenes let a model learn what the objects look like. Every sample also has its question's
transcript (``text``), a scene caption ("a dog , an apple and a bus", objects left to right)
and the spoken caption (``caption_audio``), for captioning and speech tasks.

Splits are decided by the *combination* of objects (the sorted multiset of names) through a
stable hash: about 10 % of combinations are test-only, 10 % validation-only, the rest
training, so test scenes of two or three objects are combinations never seen in training.
One-object scenes are split by their draw instead (10 % / 10 % / 80 %), so every object is
seen alone in training.

Layout of ``root`` (paths in the manifests are relative to ``root``)::

    images/<id>.png  audio/<id>.flac  caption_audio/<id>.flac
    train.jsonl  val.jsonl  test.jsonl  classes.json  manifest_info.json

A manifest row::

    {"id": "train-00006", "image": "images/train-00006.png", "audio": "audio/train-00006.flac",
     "caption_audio": "caption_audio/train-00006.flac", "text": "what animals",
     "caption": "a dog , an apple and a bus", "label": "dog", "query_category": "animals",
     "objects": ["dog", "apple", "bus"], "slots": ["left", "middle", "right"],
     "boxes": [[x0, y0, x1, y1], ...], "voice": "en-gb"}

``objects`` and ``boxes`` (pixels, exclusive end) are listed left to right; ``voice`` is the
asset-pack voice of both spoken files. Images are ``image_size`` square RGB PNGs; audio is
mono 16-bit FLAC at ``sample_rate``.

Run ``python -m mmctx.data.builtin.scenes [--root DIR]`` to generate it ahead of time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from mmctx.data.builtin import cache
from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.data.builtin.cache import STAMP

__all__ = [
    "DATASET_VERSION",
    "CATEGORIES",
    "DEFAULT_CLASSES",
    "POSITIONS",
    "QUESTIONS",
    "SPLITS",
    "combination_split",
    "default_data_root",
    "ensure_default_dataset",
    "generate_default_dataset",
    "scene_caption",
]

log = logging.getLogger(__name__)

#: Bump when the generator's output changes: stamps of older versions then regenerate.
DATASET_VERSION = 4
#: The object categories, each with eight objects of the asset pack.
CATEGORIES: list[str] = ["animals", "food", "vehicles", "plants"]
#: Class names of the task: the asked object, grouped by category (the asset pack's order).
DEFAULT_CLASSES: list[str] = [
    "dog", "cat", "cow", "pig", "horse", "rabbit", "mouse", "frog",
    "apple", "banana", "pizza", "cake", "strawberry", "lemon", "carrot", "burger",
    "car", "bus", "bike", "plane", "train", "helicopter", "boat", "tractor",
    "tree", "cactus", "sunflower", "tulip", "rose", "mushroom", "palm", "clover",
]  # fmt: skip
#: The thirds of the picture, left to right.
POSITIONS: tuple[str, ...] = ("left", "middle", "right")
#: The spoken question of each category.
QUESTIONS: dict[str, str] = {c: f"what {c}" for c in CATEGORIES}
SPLITS: tuple[str, ...] = ("train", "val", "test")
_DATASET = "mmctx-default-what-is-where"
_SEED_STRIDE = 1_000_003
_TEST_PERCENT = 10
_VAL_PERCENT = 10
_OUR_ENTRIES = {"images", "audio", "caption_audio", "classes.json", STAMP} | {
    f"{s}.jsonl" for s in SPLITS
}
_NUMBER_WORDS = {2: "two", 3: "three"}
#: Fewer samples than this render in-process (a pool's start-up costs more than it saves).
_MIN_PARALLEL = 64


def default_data_root() -> Path:
    """``$MMCTX_DATA`` if set, else ``~/.cache/mmctx/default-v<DATASET_VERSION>``."""
    env = os.environ.get("MMCTX_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mmctx" / f"default-v{DATASET_VERSION}"


def combination_split(objects: Sequence[str], draw: int | None = None) -> str:
    """The split ("train", "val" or "test") of a scene, from its object combination.

    A stable hash (SHA-256, not Python's salted ``hash``) of the sorted object names, so the
    same combination lands in the same split on every machine, for every seed. A one-object
    scene is no combination: with ``draw`` given (the scene's draw seed) it is split by that
    instead, so every object appears alone in every split (hashing its name would send all
    one-object scenes of about three objects to the test split, and keep those objects out of
    one-object training scenes altogether).
    """
    if len(objects) == 1 and draw is not None:
        key = f"single:{draw}".encode()
    else:
        key = "+".join(sorted(objects)).encode()
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100
    if bucket < _TEST_PERCENT:
        return "test"
    if bucket < _TEST_PERCENT + _VAL_PERCENT:
        return "val"
    return "train"


def scene_caption(names_left_to_right: Sequence[str], pack: AssetPack) -> str:
    """A caption like "two dogs and an apple" or "a cat , a bus and a rose".

    Objects are grouped by name in order of first appearance from the left; repeats are
    counted with "two"/"three". Punctuation is space-separated, so the word-level tokenizer
    round-trips the caption exactly.
    """
    counts: dict[str, int] = {}
    for name in names_left_to_right:
        counts[name] = counts.get(name, 0) + 1
    phrases = []
    for name, count in counts.items():
        if count == 1:
            phrases.append(f"{'an' if name[0] in 'aeiou' else 'a'} {name}")
        elif count in _NUMBER_WORDS:
            phrases.append(f"{_NUMBER_WORDS[count]} {pack.by_name[name].plural}")
        else:
            raise ValueError(f"no number word for {count} objects ({name!r})")
    if len(phrases) == 1:
        return phrases[0]
    return " , ".join(phrases[:-1]) + " and " + phrases[-1]


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Spec:
    """What one sample will be; cheap to draw, rendered later (possibly in a worker)."""

    id: str
    split: str
    seed: int
    query_category: str
    label: int
    objects: tuple[str, ...]  # left to right
    slots: tuple[int, ...]  # the third (0 left, 1 middle, 2 right) of each object


def _plan(pack: AssetPack, sizes: dict[str, int], seed: int) -> list[_Spec]:
    """Draw scenes until every split has its requested number of samples.

    Draw ``i`` uses the seed ``seed * 1_000_003 + i``; its combination's split decides where
    it goes, and draws for a split that is already full are skipped, so each split's samples
    do not depend on the other splits' sizes.
    """
    if list(pack.categories) != CATEGORIES or [o.name for o in pack.objects] != DEFAULT_CLASSES:
        raise ValueError(
            f"asset pack objects {[o.name for o in pack.objects]} (categories {pack.categories}) differ from "
            f"{DEFAULT_CLASSES} ({CATEGORIES})"
        )
    by_category = {c: [o.name for o in pack.objects_of(c)] for c in pack.categories}
    filled = {s: 0 for s in SPLITS}
    specs: list[_Spec] = []
    total = sum(sizes.values())
    max_draws = 100 * total + 10_000
    index = 0
    while len(specs) < total:
        if index >= max_draws:
            raise RuntimeError(
                f"could not fill the splits {sizes} in {max_draws} draws (got {filled})"
            )
        sample_seed = seed * _SEED_STRIDE + index
        rng = random.Random(sample_seed)
        n = rng.randint(1, 3)
        slots = sorted(rng.sample(range(3), n))  # the occupied thirds, left to right
        categories = rng.sample(CATEGORIES, n)  # all different
        objects = tuple(rng.choice(by_category[c]) for c in categories)
        asked = rng.randrange(n)  # the question always asks for a category in the picture
        split = combination_split(objects, draw=sample_seed)
        if filled[split] < sizes[split]:
            width = max(5, len(str(sizes[split] - 1)))
            specs.append(
                _Spec(
                    id=f"{split}-{filled[split]:0{width}d}",
                    split=split,
                    seed=sample_seed,
                    query_category=categories[asked],
                    slots=tuple(slots),
                    label=DEFAULT_CLASSES.index(objects[asked]),
                    objects=objects,
                )
            )
            filled[split] += 1
        index += 1
    train = {tuple(sorted(s.objects)) for s in specs if s.split == "train" and len(s.objects) > 1}
    test = {tuple(sorted(s.objects)) for s in specs if s.split == "test" and len(s.objects) > 1}
    shared = train & test
    assert not shared, f"object combinations in both train and test: {sorted(shared)[:5]}"
    return specs


# ----------------------------------------------------------------------------- rendering


class _Renderer:
    """Renders specs into files; one per process (holds the decoded asset pack)."""

    def __init__(self, pack_path: str, out: str, image_size: int, sample_rate: int) -> None:
        import torch

        torch.set_num_threads(1)  # workers run in parallel; keep results thread-independent
        self.pack = AssetPack(pack_path)
        self.out = Path(out)
        self.image_size = image_size
        self.sample_rate = sample_rate
        self.pictograms = {o.name: self.pack.pictogram(o.name) for o in self.pack.objects}
        words = set(self.pack.vocabulary)
        self.clips: dict[str, dict[str, np.ndarray]] = {}
        for voice in self.pack.voices:
            self.clips[voice] = {}
            for word in words:
                clip = self.pack.word_audio(voice, word)
                if sample_rate != self.pack.sample_rate:
                    clip = _resample(clip, self.pack.sample_rate, sample_rate)
                self.clips[voice][word] = clip

    # -- image

    def _background(self, rng: random.Random) -> np.ndarray:
        """A pastel colour, or (40 %) a linear gradient between two: (size, size, 3) float."""
        size = self.image_size
        first = np.array([rng.randint(170, 255) for _ in range(3)], dtype=np.float32)
        if rng.random() < 0.4:  # linear gradient between two pastel colours
            second = np.array([rng.randint(170, 255) for _ in range(3)], dtype=np.float32)
            angle = rng.uniform(0, 2 * np.pi)
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
            t = xx * np.cos(angle) + yy * np.sin(angle)
            t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
            return first * (1 - t[..., None]) + second * t[..., None]
        return np.broadcast_to(first, (size, size, 3)).copy()

    def _tile(self, name: str, side: int, angle: float) -> Image.Image:
        tile = self.pictograms[name].resize((side, side), Image.Resampling.LANCZOS)
        if angle:
            tile = tile.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        bbox = tile.getchannel("A").getbbox()
        return tile.crop(bbox) if bbox else tile

    def _layout(
        self, names: Sequence[str], slots: Sequence[int], rng: random.Random
    ) -> list[tuple[str, Image.Image, int, int]]:
        """One placement (name, tile, x, y) per object, inside its third of the image.

        Each tile lies inside its third (so the order is unambiguous) at a random height;
        sides 15–21 px at 64 px (scaled with the image), half of them rotated ±15°.
        """
        size = self.image_size
        slot = size / len(POSITIONS)
        placed: list[tuple[str, Image.Image, int, int]] = []
        for i, name in zip(slots, names, strict=True):
            side = rng.uniform(15, 21) * size / 64
            angle = rng.uniform(-15, 15) if rng.random() < 0.5 else 0.0
            tile = self._tile(name, max(4, round(side)), angle)
            while tile.size[0] > int(slot) - 1 or tile.size[1] > size:  # rotation grew it
                side *= 0.9
                tile = self._tile(name, max(4, round(side)), angle)
            w, h = tile.size
            x0 = int(np.ceil(i * slot))
            x = rng.randint(x0, max(x0, int((i + 1) * slot) - w))
            y = rng.randint(0, max(size - h, 0))
            placed.append((name, tile, x, y))
        return placed

    def render_image(
        self, spec: _Spec, rng: random.Random, nrng: np.random.Generator
    ) -> tuple[Image.Image, list[str], list[list[int]]]:
        """The scene image and its objects' names and boxes, left to right."""
        canvas = Image.fromarray(self._background(rng).astype(np.uint8), "RGB")
        canvas = canvas.convert("RGBA")
        placed = self._layout(spec.objects, spec.slots, rng)
        for _, tile, x, y in placed:
            canvas.alpha_composite(tile, (x, y))
        pixels = np.asarray(canvas.convert("RGB"), dtype=np.float32)
        pixels = pixels + nrng.normal(0.0, rng.uniform(1.0, 6.0), pixels.shape)  # light noise
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
        placed.sort(key=lambda p: (p[2] + p[1].size[0] / 2, p[3]))
        names = [name for name, *_ in placed]
        boxes = [[x, y, x + t.size[0], y + t.size[1]] for _, t, x, y in placed]
        return image, names, boxes

    # -- audio

    def speak(
        self, words: Sequence[str], voice: str, rng: random.Random, nrng: np.random.Generator
    ) -> np.ndarray:
        """Compose a spoken sentence from the word recordings: (S,) float32 in [-1, 1].

        Per word a speed factor 0.85–1.15 (by resampling, so pitch follows speed); pauses
        of 40–200 ms between words (plus 150–350 ms at a ","), 50–300 ms of silence at each
        end, a gain of -6..+3 dB and white noise at 20–40 dB SNR (relative to the speech).
        """
        rate = self.sample_rate
        pieces: list[np.ndarray] = [np.zeros(int(rng.uniform(0.05, 0.3) * rate), np.float32)]
        speech: list[np.ndarray] = []
        for i, word in enumerate(words):
            if word == ",":
                pieces.append(np.zeros(int(rng.uniform(0.15, 0.35) * rate), np.float32))
                continue
            if i > 0:
                pieces.append(np.zeros(int(rng.uniform(0.04, 0.2) * rate), np.float32))
            speed = round(rng.uniform(0.85, 1.15) * 100)  # new length = length * 100 / speed
            clip = self.clips[voice][word]
            if speed != 100:
                clip = _resample(clip, speed, 100)
            pieces.append(clip)
            speech.append(clip)
        pieces.append(np.zeros(int(rng.uniform(0.05, 0.3) * rate), np.float32))
        gain = 10 ** (rng.uniform(-6.0, 3.0) / 20)
        audio = np.concatenate(pieces) * np.float32(gain)
        power = float(np.mean(np.concatenate(speech).astype(np.float64) ** 2)) * gain**2
        snr_db = rng.uniform(20.0, 40.0)
        noise = nrng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), audio.shape)
        return np.clip(audio + noise.astype(np.float32), -1.0, 1.0).astype(np.float32)

    # -- one sample

    def __call__(self, spec: _Spec) -> dict[str, object]:
        # A stream of its own: seeding with spec.seed again would replay the planning draws.
        rng = random.Random(f"mmctx-render:{spec.seed}")  # str seeds hash with SHA-512: stable
        nrng = np.random.default_rng([spec.seed, 1])
        image, names, boxes = self.render_image(spec, rng, nrng)
        voice = rng.choice(self.pack.voices)
        text = QUESTIONS[spec.query_category]
        caption = scene_caption(names, self.pack)
        question = self.speak(text.split(), voice, rng, nrng)
        spoken_caption = self.speak(caption.split(), voice, rng, nrng)

        row = {
            "id": spec.id,
            "image": f"images/{spec.id}.png",
            "audio": f"audio/{spec.id}.flac",
            "caption_audio": f"caption_audio/{spec.id}.flac",
            "text": text,
            "caption": caption,
            "label": DEFAULT_CLASSES[spec.label],
            "query_category": spec.query_category,
            "slots": [POSITIONS[i] for i in spec.slots],
            "objects": names,
            "boxes": boxes,
            "voice": voice,
        }
        image.save(self.out / row["image"], format="PNG")
        sf.write(self.out / row["audio"], question, self.sample_rate, "PCM_16", format="FLAC")
        sf.write(
            self.out / row["caption_audio"],
            spoken_caption,
            self.sample_rate,
            "PCM_16",
            format="FLAC",
        )
        return row


def _resample(audio: np.ndarray, orig: int, new: int) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), orig, new).numpy()


_WORKER: _Renderer | None = None


def _init_worker(pack_path: str, out: str, image_size: int, sample_rate: int) -> None:
    global _WORKER
    _WORKER = _Renderer(pack_path, out, image_size, sample_rate)


def _render_in_worker(spec: _Spec) -> dict[str, object]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(spec)


def _render_all(
    specs: list[_Spec],
    pack: AssetPack,
    out: Path,
    image_size: int,
    sample_rate: int,
    num_workers: int,
) -> Iterator[dict[str, object]]:
    args = (str(pack.path), str(out), image_size, sample_rate)
    if num_workers <= 1 or len(specs) < _MIN_PARALLEL or mp.current_process().daemon:
        renderer = _Renderer(*args)
        yield from map(renderer, specs)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=args) as pool:
        yield from pool.imap(_render_in_worker, specs, chunksize=16)


# ----------------------------------------------------------------------------- files


def _params(
    num_train: int, num_val: int, num_test: int, image_size: int, sample_rate: int, seed: int
) -> dict[str, int]:
    params = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "image_size": image_size,
        "sample_rate": sample_rate,
        "seed": seed,
    }
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} must be an int, got {value!r}")
        if value < 0 or (key in ("image_size", "sample_rate") and value < 1):
            raise ValueError(f"{key} must be positive, got {value}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 to fit 3 objects, got {image_size}")
    return params


def generate_default_dataset(
    root: str | Path,
    num_train: int = 3000,
    num_val: int = 500,
    num_test: int = 500,
    image_size: int = 64,
    sample_rate: int = 16000,
    seed: int = 0,
    num_workers: int | None = None,
) -> Path:
    """Generate the default data set into ``root`` (replacing a previous one), atomically.

    Files are written into a temporary folder beside ``root`` that is renamed into place
    when complete, with ``manifest_info.json`` written last; a killed run leaves ``root``
    as it was.

    Args:
        root: output folder; an existing one must be an earlier default data set or empty.
        num_train: number of training samples.
        num_val: number of validation samples.
        num_test: number of test samples.
        image_size: side of the square RGB images, in pixels (at least 32).
        sample_rate: audio sample rate in Hz.
        seed: generation seed; sample ``i`` of the draw sequence uses
            ``seed * 1_000_003 + i``.
        num_workers: rendering processes (``None``: up to 2); the output does not depend
            on it.

    Returns:
        ``root`` as a ``Path``.
    """
    root = Path(root).expanduser().resolve()
    params = _params(num_train, num_val, num_test, image_size, sample_rate, seed)
    with cache.lock(root):
        return _generate_locked(root, params, num_workers)


def _generate_locked(root: Path, params: dict[str, int], num_workers: int | None) -> Path:
    start = time.perf_counter()
    pack = AssetPack()
    sizes = {"train": params["num_train"], "val": params["num_val"], "test": params["num_test"]}
    specs = _plan(pack, sizes, params["seed"])
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)

    with cache.build_atomically(root, _DATASET, _OUR_ENTRIES) as tmp:
        for sub in ("images", "audio", "caption_audio"):
            (tmp / sub).mkdir()
        rows: dict[str, list[dict[str, object]]] = {s: [] for s in SPLITS}
        for spec, row in zip(
            specs,
            _render_all(specs, pack, tmp, params["image_size"], params["sample_rate"], num_workers),
            strict=True,
        ):
            rows[spec.split].append(row)
        for split in SPLITS:
            with open(tmp / f"{split}.jsonl", "w") as handle:
                for row in rows[split]:
                    handle.write(json.dumps(row) + "\n")
        (tmp / "classes.json").write_text(json.dumps(DEFAULT_CLASSES) + "\n")
        stamp = {
            "dataset": _DATASET,
            "version": DATASET_VERSION,
            "params": params,
            "assets": pack.fingerprint(),
            "counts": {s: len(rows[s]) for s in SPLITS},
            "classes": DEFAULT_CLASSES,
            "seconds": round(time.perf_counter() - start, 3),
        }
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")  # last: marks complete
    log.info("generated %s (%s) in %.1f s", root, stamp["counts"], stamp["seconds"])
    return root


def ensure_default_dataset(
    root: str | Path,
    num_train: int = 3000,
    num_val: int = 500,
    num_test: int = 500,
    image_size: int = 64,
    sample_rate: int = 16000,
    seed: int = 0,
    num_workers: int | None = None,
) -> Path:
    """Generate the default data set unless ``root`` already holds it with these parameters.

    ``root/manifest_info.json`` records the generator version, the parameters and a
    fingerprint of the asset pack; when any differs (or the stamp is missing) the data set
    is regenerated with :func:`generate_default_dataset`, otherwise nothing is touched.
    Arguments as for :func:`generate_default_dataset`.
    """
    root = Path(root).expanduser().resolve()
    params = _params(num_train, num_val, num_test, image_size, sample_rate, seed)
    return cache.ensure(root, lambda: _stamp_matches(root, params), lambda: _generate_locked(root, params, num_workers))


def _stamp_matches(root: Path, params: dict[str, int]) -> bool:
    return cache.stamp_matches(root, DATASET_VERSION, params, AssetPack().fingerprint(), [f"{s}.jsonl" for s in SPLITS])


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mmctx.data.builtin.scenes``: generate the default data set."""
    parser = argparse.ArgumentParser(
        prog="python -m mmctx.data.builtin.scenes",
        description="Generate mmctx's embedded default data set ('what animals?').",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help=f"output folder (default: $MMCTX_DATA or ~/.cache/mmctx/default-v{DATASET_VERSION})",
    )
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="rendering processes")
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if the folder is up to date"
    )
    args = parser.parse_args(argv)
    root = args.root if args.root is not None else default_data_root()
    kwargs = dict(
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        image_size=args.image_size,
        sample_rate=args.sample_rate,
        seed=args.seed,
        num_workers=args.workers,
    )
    params = _params(**{k: v for k, v in kwargs.items() if k != "num_workers"})
    up_to_date = not args.force and _stamp_matches(Path(root).expanduser().resolve(), params)
    start = time.perf_counter()
    fn = generate_default_dataset if args.force else ensure_default_dataset
    root = fn(root, **kwargs)
    elapsed = time.perf_counter() - start
    stamp = cache.read_stamp(root) or {}
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    what = "already up to date" if up_to_date else f"generated in {elapsed:.1f} s"
    print(f"default data set at {root}: {stamp.get('counts')} samples, {size / 1e6:.1f} MB, {what}")


if __name__ == "__main__":
    main()
