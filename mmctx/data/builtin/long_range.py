"""A long-range multimodal retrieval task: "what kind of thing is pictured, and what is the key?".

In the spirit of the Long Range Arena retrieval tasks (Tay et al. 2021) and of
needle-in-a-haystack tests: the answer combines an image with one short fact hidden at a
random place in a long text.

Each sample has

* ``image``: one pictogram of the default asset pack (one of the eight
  :data:`LONG_RANGE_OBJECTS`, two per category) at a random size and place on a pastel
  background; it shows the *category* (animals, food, vehicles, plants);
* ``text``: a long document (``min_tokens``..``max_tokens`` word tokens, a few thousand)
  of short sentences:

  - exactly one *key sentence* ``the key is blue .``, at a uniformly random sentence
    boundary; the word ``key`` appears nowhere else;
  - distractors everywhere, about the 32 objects of the pack, from a per-sample "world"
    that gives each object a colour: colour facts ``the cow is pink .`` (in the
    :data:`DISTRACTOR_COLOURS`, so the four key colours appear in the key sentence only)
    and fillers ``the pig is near the bus .``, ``a frog sees a cake .``, ``two pigs and a
    car .``;

* ``label``: ``"<category>-<colour>"``, the pictured object's category and the key
  sentence's colour (one of the 16 :data:`LONG_RANGE_CLASSES`);
* ``answer``: the same two facts as a text to *generate*, ``"<colour> <category>"`` (e.g.
  ``"blue animals"``, see :func:`answer_text`): the target of the generation variant of the
  task (``LongRangeDataModule(output="answer")``). Its first word appears in the document only
  in the key sentence; its second word appears nowhere in the document (the picture tells it).

Category and key colour are drawn independently and uniformly, so a model that sees only
the image is capped at 1 / 4 (it knows the category, guesses the colour), a model that
sees only the text at 1 / 4 as well, and only a model that reads the image *and* the key
sentence can be right every time. A model that sees only the first 512 tokens knows the
key colour for the samples whose key sentence lies there (fraction p) and guesses it for
the others: its accuracy is capped at ``p + (1 - p) / 4``. ``fact_token`` in every
manifest row (the index of the key sentence's colour word in the tokenized text) and
:func:`fact_beyond_fraction` give p; with 1,536..3,072-token documents 1 - p is about
0.77 and the cap (:func:`truncation_cap`) about 0.42.

The task is retrieval (passkey-style: the needle's words are unique), not binding: with the
key colours shared by the distractor facts (so that only the word ``key`` two tokens back
tells the key colour apart) a 1-layer sliding-window model did not leave chance within
700 steps even on 512..768-token documents, which is beyond a CPU-minutes budget.

Training documents (only) are a *length mixture* when ``train_min_tokens`` is set (the
default, 128): their lengths are drawn log-uniformly from ``train_min_tokens`` to
``max_tokens``, so that a model first finds the key sentence in short documents (on
1,536..3,072-token documents alone, attention over ~2,300 tokens starts ~2,300x diluted and
no model left chance in CPU minutes). Validation and test documents are always
``min_tokens``..``max_tokens`` uniform.

Layout of ``root`` (paths in the manifests are relative to ``root``)::

    images/<id>.png  train.jsonl  val.jsonl  test.jsonl  classes.json
    tokenizer.json  manifest_info.json

A manifest row::

    {"id": "train-00000", "image": "images/train-00000.png", "text": "a pig sees ... .",
     "label": "animals-blue", "answer": "blue animals", "object": "cow", "category": "animals",
     "colour": "blue", "num_tokens": 2411, "fact_token": 1733}

The generator is deterministic under ``seed`` (sample ``i`` of split ``s`` draws from its
own ``random.Random`` seeded with a string of the seed, the split and ``i``), and cached
like the default data: :func:`ensure_long_range_dataset` regenerates only when
``manifest_info.json`` records other parameters or another generator version.

Run ``python -m mmctx.data.builtin.long_range [--root DIR]`` to generate it ahead of time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mmctx.data.builtin import cache
from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.data.builtin.cache import STAMP
from mmctx.data.tokenization import TextTokenizer, train_word_tokenizer

__all__ = [
    "DISTRACTOR_COLOURS",
    "KEY_WORD",
    "LONG_RANGE_CATEGORIES",
    "LONG_RANGE_CLASSES",
    "LONG_RANGE_COLOURS",
    "LONG_RANGE_OBJECTS",
    "LONG_RANGE_VERSION",
    "LongRangeSample",
    "answer_text",
    "ensure_long_range_dataset",
    "fact_beyond_fraction",
    "generate_long_range_dataset",
    "long_range_data_root",
    "long_range_params",
    "long_range_tokenizer",
    "make_sample",
    "truncation_cap",
]

log = logging.getLogger(__name__)

#: Bump when the generator's output changes: stamps of older versions then regenerate.
#: (4: the manifest rows gained ``answer``; the documents, pictures and labels are those of 3.)
LONG_RANGE_VERSION = 4
#: The colours the key sentence states (and nothing else in the document).
LONG_RANGE_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
#: The colours the distractor colour facts state.
DISTRACTOR_COLOURS: tuple[str, ...] = ("pink", "brown", "black", "white")
#: The categories of the pictured objects (those of the asset pack).
LONG_RANGE_CATEGORIES: tuple[str, ...] = ("animals", "food", "vehicles", "plants")
#: The class names of the task, ``"<category>-<colour>"``; index = category * 4 + colour.
LONG_RANGE_CLASSES: list[str] = [f"{c}-{k}" for c in LONG_RANGE_CATEGORIES for k in LONG_RANGE_COLOURS]
#: The objects that can be pictured (two per category of the asset pack).
LONG_RANGE_OBJECTS: tuple[str, ...] = ("dog", "cow", "apple", "cake", "bus", "plane", "tree", "rose")
#: The word that marks the key sentence ``the key is <colour> .`` and appears nowhere else.
KEY_WORD = "key"
SPLITS: tuple[str, ...] = ("train", "val", "test")
_DATASET = "mmctx-long-range"
_OUR_ENTRIES = {"images", "classes.json", "tokenizer.json", STAMP} | {f"{s}.jsonl" for s in SPLITS}
#: Probability that a distractor sentence is a colour fact (else a filler).
_FACT_PROB = 0.3
_NUMBER_WORDS = ("two", "three")


def long_range_data_root() -> Path:
    """``$MMCTX_LONG_RANGE_DATA`` if set, else ``~/.cache/mmctx/long-range-v<VERSION>``."""
    env = os.environ.get("MMCTX_LONG_RANGE_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mmctx" / f"long-range-v{LONG_RANGE_VERSION}"


def _vocabulary(pack: AssetPack) -> list[str]:
    """Every word the generator can write (specials excluded)."""
    words = {"the", "is", "near", "a", "an", "sees", "and", ".", KEY_WORD, *_NUMBER_WORDS, *LONG_RANGE_COLOURS, *DISTRACTOR_COLOURS}
    for obj in pack.objects:
        words |= {obj.name, obj.plural}
    return sorted(words)


def long_range_tokenizer(answers: bool = False) -> TextTokenizer:
    """The task's word-level tokenizer, built from the fixed vocabulary (no data needed).

    ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3, then the words in alphabetical
    order, so the ids never depend on generated data (``vocab_size`` is known at once).

    Args:
        answers: also the words of the answers (:func:`answer_text`): the category names,
            which no document contains. Off for the classification task, whose vocabulary
            (and so its token ids and its models' initialisation) stays that of the documents.
    """
    words = _vocabulary(AssetPack()) + (list(LONG_RANGE_CATEGORIES) if answers else [])
    return train_word_tokenizer([" ".join(sorted(words))])


def answer_text(colour: str, category: str) -> str:
    """The text a generating model must answer: ``"<colour> <category>"``, e.g. ``"blue animals"``.

    The key sentence's colour (read from the document) first, then the pictured object's
    category (read from the picture).

    Raises:
        ValueError: ``colour`` is not a key colour or ``category`` not a category.
    """
    if colour not in LONG_RANGE_COLOURS or category not in LONG_RANGE_CATEGORIES:
        raise ValueError(
            f"answer_text: need a colour of {LONG_RANGE_COLOURS} and a category of {LONG_RANGE_CATEGORIES}, "
            f"got {colour!r}, {category!r}"
        )
    return f"{colour} {category}"


def truncation_cap(beyond: float, num_colours: int = len(LONG_RANGE_COLOURS)) -> float:
    """Best accuracy of a model that reads the image and the first tokens only.

    It can be right every time the key sentence lies in what it reads (a fraction
    ``1 - beyond``) and guesses the colour otherwise: ``(1 - beyond) + beyond / num_colours``.
    """
    if not 0.0 <= beyond <= 1.0:
        raise ValueError(f"truncation_cap: beyond must be a fraction in [0, 1], got {beyond}")
    return (1.0 - beyond) + beyond / num_colours


# ----------------------------------------------------------------------------- text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class LongRangeSample:
    """One generated sample before rendering.

    Attributes:
        text: the document, words separated by single spaces (one token per word).
        object: the pictured object.
        category: its category (one of :data:`LONG_RANGE_CATEGORIES`).
        colour: the key sentence's colour (one of :data:`LONG_RANGE_COLOURS`).
        label: index into :data:`LONG_RANGE_CLASSES` of ``"<category>-<colour>"``.
        num_tokens: tokens of ``text``.
        fact_token: index of the key sentence's colour word among the tokens of ``text``.
        seed: the string seed of the sample's random stream.
    """

    text: str
    object: str
    category: str
    colour: str
    label: int
    num_tokens: int
    fact_token: int
    seed: str

    @property
    def answer(self) -> str:
        """The answer to generate, ``"<colour> <category>"`` (:func:`answer_text`)."""
        return answer_text(self.colour, self.category)


def make_sample(
    seed: str, min_tokens: int, max_tokens: int, pack: AssetPack | None = None, log_uniform: bool = False
) -> LongRangeSample:
    """Draw one sample's text, pictured object and label from the string seed ``seed``.

    The pictured object (uniform over :data:`LONG_RANGE_OBJECTS`) and the key colour
    (uniform) are drawn independently. The document is distractor sentences about all the
    objects of the pack, colour facts (probability 0.3 per sentence, each object's colour
    fixed per sample) and fillers, added until it holds at least a target length drawn
    uniformly (``log_uniform``: log-uniformly) from ``[min_tokens, max_tokens]`` (never more
    than ``max_tokens``); the key sentence ``the key is <colour> .`` is inserted at a
    uniformly random sentence boundary.
    """
    if not 64 <= min_tokens <= max_tokens:
        raise ValueError(f"need 64 <= min_tokens <= max_tokens, got min_tokens={min_tokens}, max_tokens={max_tokens}")
    pack = pack or AssetPack()
    rng = random.Random(seed)  # str seeds hash with SHA-512: stable across processes
    names = [o.name for o in pack.objects]
    world = {name: rng.choice(DISTRACTOR_COLOURS) for name in names}
    obj = rng.choice(LONG_RANGE_OBJECTS)
    category = pack.by_name[obj].category
    colour = rng.choice(LONG_RANGE_COLOURS)
    key = ["the", KEY_WORD, "is", colour, "."]
    budget = max_tokens - len(key)
    if log_uniform:
        length_target = round(math.exp(rng.uniform(math.log(min_tokens), math.log(max_tokens))))
    else:
        length_target = rng.randint(min_tokens, max_tokens)
    target = length_target - len(key)
    sentences: list[list[str]] = []
    length = 0
    while length < target:
        a, b = rng.choice(names), rng.choice(names)
        if rng.random() < _FACT_PROB:
            words = ["the", a, "is", world[a], "."]
        else:
            kind = rng.randrange(3)
            if kind == 0:
                words = ["the", a, "is", "near", "the", b, "."]
            elif kind == 1:
                words = [_article(a), a, "sees", _article(b), b, "."]
            else:
                words = [rng.choice(_NUMBER_WORDS), pack.by_name[a].plural, "and", _article(b), b, "."]
        if length + len(words) > budget:
            break
        sentences.append(words)
        length += len(words)
    slot = rng.randint(0, len(sentences))  # a uniformly random sentence boundary
    fact_token = sum(len(s) for s in sentences[:slot]) + 3
    sentences.insert(slot, key)
    tokens = [w for s in sentences for w in s]
    label = LONG_RANGE_CLASSES.index(f"{category}-{colour}")
    return LongRangeSample(" ".join(tokens), obj, category, colour, label, len(tokens), fact_token, seed)


# ----------------------------------------------------------------------------- image


def render_object(pictogram: Image.Image, image_size: int, rng: random.Random) -> Image.Image:
    """The pictogram at a random size (45-75 % of the side), place and tilt (±15°, half the
    time) on a pastel background with light noise: an RGB ``image_size`` square."""
    background = tuple(rng.randint(170, 255) for _ in range(3))
    canvas = Image.new("RGBA", (image_size, image_size), (*background, 255))
    side = max(4, round(rng.uniform(0.45, 0.75) * image_size))
    tile = pictogram.resize((side, side), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        tile = tile.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BICUBIC, expand=True)
        tile = tile.resize((min(tile.width, image_size), min(tile.height, image_size)), Image.Resampling.LANCZOS)
    x = rng.randint(0, image_size - tile.width)
    y = rng.randint(0, image_size - tile.height)
    canvas.alpha_composite(tile, (x, y))
    pixels = np.asarray(canvas.convert("RGB"), dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 3.0, pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------- files


def long_range_params(
    num_train: int,
    num_val: int,
    num_test: int,
    min_tokens: int,
    max_tokens: int,
    image_size: int,
    seed: int,
    train_min_tokens: int,
) -> dict[str, int]:
    """The generation parameters as recorded in the stamp, validated (arguments as for
    :func:`generate_long_range_dataset`).

    Raises:
        TypeError: a parameter is not an int.
        ValueError: a parameter is out of range.
    """
    params = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "min_tokens": min_tokens,
        "max_tokens": max_tokens,
        "train_min_tokens": train_min_tokens,
        "image_size": image_size,
        "seed": seed,
    }
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    if not 64 <= min_tokens <= max_tokens:
        raise ValueError(f"need 64 <= min_tokens <= max_tokens, got min_tokens={min_tokens}, max_tokens={max_tokens}")
    if train_min_tokens and not 64 <= train_min_tokens <= min_tokens:
        raise ValueError(
            f"need 64 <= train_min_tokens <= min_tokens (or 0: off), got train_min_tokens={train_min_tokens}, "
            f"min_tokens={min_tokens}"
        )
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    return params


def _stamp_matches(root: Path, params: dict[str, int]) -> bool:
    return cache.stamp_matches(root, LONG_RANGE_VERSION, params, AssetPack().fingerprint(), [f"{s}.jsonl" for s in SPLITS])


def generate_long_range_dataset(
    root: str | Path,
    num_train: int = 2000,
    num_val: int = 250,
    num_test: int = 500,
    min_tokens: int = 1536,
    max_tokens: int = 3072,
    image_size: int = 32,
    seed: int = 0,
    train_min_tokens: int = 128,
) -> Path:
    """Generate the long-range data set into ``root`` (replacing a previous one), atomically.

    Files are written into a temporary folder beside ``root`` that is renamed into place
    when complete, ``manifest_info.json`` last.

    Args:
        root: output folder; an existing one must be an earlier long-range data set or empty.
        num_train: training samples.
        num_val: validation samples.
        num_test: test samples.
        min_tokens: shortest document, in tokens.
        max_tokens: longest document, in tokens.
        image_size: side of the square RGB images, in pixels.
        seed: generation seed; sample ``i`` of split ``s`` uses the string seed
            ``"mmctx-long-range:<seed>:<s>:<i>"``.
        train_min_tokens: shortest *training* document; training lengths are then drawn
            log-uniformly from ``[train_min_tokens, max_tokens]`` (a length mixture; 0: the
            training documents are drawn like the others).

    Returns:
        ``root`` as a ``Path``.
    """
    root = Path(root).expanduser().resolve()
    params = long_range_params(num_train, num_val, num_test, min_tokens, max_tokens, image_size, seed, train_min_tokens)
    with cache.lock(root):
        return _generate_locked(root, params)


def _generate_locked(root: Path, params: dict[str, int]) -> Path:
    start = time.perf_counter()
    pack = AssetPack()
    pictograms = {name: pack.pictogram(name) for name in LONG_RANGE_OBJECTS}
    with cache.build_atomically(root, _DATASET, _OUR_ENTRIES) as tmp:
        (tmp / "images").mkdir()
        counts, beyond = {}, {}
        for split in SPLITS:
            n = params[f"num_{split}"]
            width = max(5, len(str(max(n - 1, 0))))
            rows = []
            for i in range(n):
                seed = f"mmctx-long-range:{params['seed']}:{split}:{i}"
                if split == "train" and params["train_min_tokens"]:  # the length mixture
                    sample = make_sample(seed, params["train_min_tokens"], params["max_tokens"], pack, log_uniform=True)
                else:
                    sample = make_sample(seed, params["min_tokens"], params["max_tokens"], pack)
                sid = f"{split}-{i:0{width}d}"
                image = render_object(pictograms[sample.object], params["image_size"], random.Random(f"{sample.seed}:image"))
                image.save(tmp / "images" / f"{sid}.png", format="PNG")
                rows.append(
                    {
                        "id": sid,
                        "image": f"images/{sid}.png",
                        "text": sample.text,
                        "label": LONG_RANGE_CLASSES[sample.label],
                        "answer": sample.answer,
                        "object": sample.object,
                        "category": sample.category,
                        "colour": sample.colour,
                        "num_tokens": sample.num_tokens,
                        "fact_token": sample.fact_token,
                    }
                )
            with open(tmp / f"{split}.jsonl", "w") as handle:
                for row in rows:
                    handle.write(json.dumps(row) + "\n")
            counts[split] = n
            beyond[split] = round(fact_beyond_fraction(rows, 512), 4) if rows else None
        (tmp / "classes.json").write_text(json.dumps(LONG_RANGE_CLASSES) + "\n")
        long_range_tokenizer().save(tmp)
        stamp = {
            "dataset": _DATASET,
            "version": LONG_RANGE_VERSION,
            "params": params,
            "assets": pack.fingerprint(),
            "counts": counts,
            "classes": LONG_RANGE_CLASSES,
            "objects": list(LONG_RANGE_OBJECTS),
            "fact_beyond_512": beyond,
            "truncation_cap_512": {k: None if v is None else round(truncation_cap(v), 4) for k, v in beyond.items()},
            "seconds": round(time.perf_counter() - start, 3),
        }
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")  # last: marks complete
    log.info("generated %s (%s) in %.1f s", root, counts, stamp["seconds"])
    return root


def ensure_long_range_dataset(
    root: str | Path,
    num_train: int = 2000,
    num_val: int = 250,
    num_test: int = 500,
    min_tokens: int = 1536,
    max_tokens: int = 3072,
    image_size: int = 32,
    seed: int = 0,
    train_min_tokens: int = 128,
) -> Path:
    """Generate the data set unless ``root`` already holds it with these parameters.

    Arguments as for :func:`generate_long_range_dataset`.
    """
    root = Path(root).expanduser().resolve()
    params = long_range_params(num_train, num_val, num_test, min_tokens, max_tokens, image_size, seed, train_min_tokens)
    return cache.ensure(root, lambda: _stamp_matches(root, params), lambda: _generate_locked(root, params))


def fact_beyond_fraction(rows: Sequence[dict], limit: int = 512) -> float:
    """Fraction of manifest rows whose key sentence (its colour word) lies at token ``>= limit``:
    the samples whose colour a model truncated to the first ``limit`` tokens can only guess
    (see :func:`truncation_cap`)."""
    if not rows:
        raise ValueError("fact_beyond_fraction: no rows")
    return sum(int(r["fact_token"]) >= limit for r in rows) / len(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mmctx.data.builtin.long_range``: generate the data set and print its statistics."""
    parser = argparse.ArgumentParser(prog="python -m mmctx.data.builtin.long_range", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="output folder (default: long_range_data_root())")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=250)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--min-tokens", type=int, default=1536)
    parser.add_argument("--max-tokens", type=int, default=3072)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-min-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    root = ensure_long_range_dataset(
        args.root if args.root is not None else long_range_data_root(),
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        image_size=args.image_size,
        seed=args.seed,
        train_min_tokens=args.train_min_tokens,
    )
    stamp = cache.read_stamp(root) or {}
    print(f"long-range data set at {root}: {stamp.get('counts')} samples; key sentence beyond token 512: "
          f"{stamp.get('fact_beyond_512')}; accuracy cap of truncation to 512: {stamp.get('truncation_cap_512')}")


if __name__ == "__main__":
    main()
