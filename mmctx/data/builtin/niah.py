"""Needle-in-a-haystack documents for the long-range task: an asked length, an asked depth.

The long-range task (:mod:`mmctx.data.builtin.long_range`) hides one key sentence
``the key is blue .`` at a *random* place in a 1,536..3,072-token document. A
needle-in-a-haystack (NIAH) evaluation instead asks for the document's length and for the
needle's depth (0 % = the first sentence, 100 % = the last) and measures accuracy per
(length, depth) cell, e.g. from 1K to 64K tokens for a model trained on ≤ 3K.

:func:`make_niah_sample` writes such a document with the long-range vocabulary and
grammar (the same distractor sentences, the same per-sample colour "world", the same
16 labels ``"<category>-<key colour>"``), so a checkpoint trained on the long-range data
set reads it as it reads its training data. Documents are exactly ``num_tokens`` word tokens
long; the key sentence starts at the sentence boundary nearest to ``depth`` of the
document. Every sample draws from its own ``random.Random`` seeded with a string naming the
length, the depth and the index (``"mmctx-niah:<seed>:<num_tokens>:<depth>:<i>"``), a stream
the long-range training data (``"mmctx-long-range:..."``) never uses: the documents are fresh.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.data.builtin.long_range import (
    DISTRACTOR_COLOURS,
    KEY_WORD,
    LONG_RANGE_CLASSES,
    LONG_RANGE_COLOURS,
    LONG_RANGE_OBJECTS,
    LongRangeSample,
    render_object,
)

__all__ = ["NIAH_DEPTHS", "NIAH_LENGTHS", "NeedleSample", "make_niah_sample", "niah_samples"]

#: The default context lengths of the evaluation, in word tokens.
NIAH_LENGTHS: tuple[int, ...] = (1024, 4096, 16384, 65536)
#: The default needle depths: 0 %, 10 %, ..., 100 % of the document.
NIAH_DEPTHS: tuple[float, ...] = tuple(i / 10 for i in range(11))
_KEY_LEN = 5  # "the key is <colour> ."
_FACT_PROB = 0.3  # as in long_range: a distractor sentence is a colour fact with this probability
_NUMBER_WORDS = ("two", "three")
# The budget left once the free filling stops (10..16 tokens) as sentence lengths 5/6/7,
# so that every document has exactly the asked length.
_TAIL = {10: (5, 5), 11: (5, 6), 12: (6, 6), 13: (6, 7), 14: (7, 7), 15: (5, 5, 5), 16: (5, 5, 6)}


@dataclass(frozen=True)
class NeedleSample:
    """One NIAH sample: the long-range sample (text, label, ``fact_token``, ...), its depth
    and its rendered picture.

    Attributes:
        sample: the document, pictured object and label, as the long-range generator's.
        depth: the asked needle depth in [0, 1].
        image: the picture (an RGB square), rendered as the long-range data set renders it.
    """

    sample: LongRangeSample
    depth: float
    image: Image.Image


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _sentence(rng: random.Random, pack: AssetPack, world: dict[str, str], length: int) -> list[str]:
    """One distractor sentence of exactly ``length`` (5, 6 or 7) tokens."""
    names = [o.name for o in pack.objects]
    a, b = rng.choice(names), rng.choice(names)
    if length == 5:
        return ["the", a, "is", world[a], "."]
    if length == 6:
        if rng.random() < 0.5:
            return [_article(a), a, "sees", _article(b), b, "."]
        return [rng.choice(_NUMBER_WORDS), pack.by_name[a].plural, "and", _article(b), b, "."]
    if length == 7:
        return ["the", a, "is", "near", "the", b, "."]
    raise ValueError(f"_sentence: length must be 5, 6 or 7, got {length}")


def _random_length(rng: random.Random) -> int:
    # the long-range mix: a colour fact (5) with p 0.3, else one of three fillers (7, 6, 6)
    return 5 if rng.random() < _FACT_PROB else (7, 6, 6)[rng.randrange(3)]


def make_niah_sample(
    seed: str, num_tokens: int, depth: float, pack: AssetPack | None = None, image_size: int = 32
) -> NeedleSample:
    """A document of exactly ``num_tokens`` tokens with the key sentence at ``depth``.

    Args:
        seed: the sample's string seed (everything is drawn from ``random.Random(seed)``).
        num_tokens: document length in word tokens, at least 16.
        depth: where the key sentence starts, as a fraction of the tokens before it: its
            first token is at the sentence boundary nearest to ``depth * (num_tokens - 5)``
            (0: the first sentence, 1: the last).
        pack: the asset pack (default: the committed one).
        image_size: side of the rendered picture, in pixels.

    Returns:
        A :class:`NeedleSample`; ``sample.fact_token`` is the index of the key colour word.

    Raises:
        ValueError: ``num_tokens < 16`` or ``depth`` outside [0, 1].
    """
    if num_tokens < 16:
        raise ValueError(f"make_niah_sample: num_tokens must be >= 16, got {num_tokens}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"make_niah_sample: depth must be in [0, 1], got {depth}")
    pack = pack or AssetPack()
    rng = random.Random(seed)
    world = {o.name: rng.choice(DISTRACTOR_COLOURS) for o in pack.objects}
    obj = rng.choice(LONG_RANGE_OBJECTS)
    category = pack.by_name[obj].category
    colour = rng.choice(LONG_RANGE_COLOURS)
    # sentence lengths first, so that they sum to exactly num_tokens - 5
    budget = num_tokens - _KEY_LEN
    lengths: list[int] = []
    while budget - sum(lengths) >= 17:
        lengths.append(_random_length(rng))
    lengths.extend(_TAIL[budget - sum(lengths)])
    sentences = [_sentence(rng, pack, world, n) for n in lengths]
    # the boundary nearest to the asked depth (boundaries at cumulative lengths, 0 first)
    target = depth * budget
    offset, slot = 0, 0
    best = (abs(target), 0, 0)
    for i, n in enumerate(lengths, start=1):
        offset += n
        best = min(best, (abs(target - offset), i, offset))
    _, slot, start = best
    sentences.insert(slot, ["the", KEY_WORD, "is", colour, "."])
    tokens = [w for s in sentences for w in s]
    label = LONG_RANGE_CLASSES.index(f"{category}-{colour}")
    sample = LongRangeSample(" ".join(tokens), obj, category, colour, label, len(tokens), start + 3, seed)
    image = render_object(pack.pictogram(obj), image_size, random.Random(f"{seed}:image"))
    return NeedleSample(sample, depth, image)


def niah_samples(
    num_tokens: int, depth: float, count: int, seed: int = 0, pack: AssetPack | None = None, image_size: int = 32
) -> list[NeedleSample]:
    """``count`` fresh samples of one (length, depth) cell; sample ``i`` uses the string seed
    ``"mmctx-niah:<seed>:<num_tokens>:<depth>:<i>"`` (depth with 4 decimals)."""
    pack = pack or AssetPack()
    return [
        make_niah_sample(f"mmctx-niah:{seed}:{num_tokens}:{depth:.4f}:{i}", num_tokens, depth, pack, image_size)
        for i in range(count)
    ]
