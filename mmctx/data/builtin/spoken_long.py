"""A spoken long document: minutes of speech with one key word said once, at a random time.

The spoken twin of the long-range text task (:mod:`mmctx.data.builtin.long_range`) and of a
needle-in-a-haystack test. A *stream* is a sequence of words of the asset pack's vocabulary,
each one a recording of the pack (one of its 4 voices, drawn per word), separated by short
random pauses (0.05-0.25 s), at 16 kHz:

* exactly one word is a *key word*, one of :data:`KEY_WORDS` (``cat``, ``dog``, ``cow``,
  ``pig``), at a uniformly random place in the stream;
* every other word is a distractor: any vocabulary word except the key words and their
  plurals (76 words), so a key word is heard once and only once;
* the label is the key word's index in :data:`KEY_WORDS` (4 classes, chance 1/4).

A one-hour stream is 57.6 M samples (230 MB as float32), 90,000 tokens at the audio
encoder's 25 tokens/s. Streams are therefore *described* first (:func:`make_stream`: the
word list with start samples, a few hundred kB for an hour) and *rendered* in pieces
(:meth:`SpokenStream.render` of any sample range, or :meth:`SpokenStream.chunks`), so a
streaming model holds one piece at a time.

Everything is deterministic: stream ``i`` of split ``s`` draws from its own
``random.Random`` seeded with the string ``"<seed>-<split>-<i>"`` (:func:`stream_seed`),
and rendering is pure (no noise), so any piece of any stream is the same on every machine.
No files are written: the pack's 336 recordings are read once per process (~10 MB).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mmctx.data.builtin.asset_pack import AssetPack

__all__ = [
    "KEY_WORDS",
    "SPOKEN_SAMPLE_RATE",
    "SpokenLongDataset",
    "SpokenStream",
    "collate_spoken",
    "distractor_words",
    "make_stream",
    "stream_seed",
]

#: The needles: exactly one of them is said once per stream; the label is its index.
KEY_WORDS: tuple[str, ...] = ("cat", "dog", "cow", "pig")
#: Sample rate of the asset pack's recordings (checked against the pack).
SPOKEN_SAMPLE_RATE = 16000
_GAP_SECONDS = (0.05, 0.25)


def stream_seed(seed: int, split: str, index: int) -> str:
    """The string seed of stream ``index`` of ``split`` (its own random stream)."""
    return f"{seed}-{split}-{index}"


@lru_cache(maxsize=1)
def _recordings() -> tuple[dict[tuple[str, str], np.ndarray], tuple[str, ...], tuple[str, ...]]:
    """All recordings of the default pack: ((voice, word) → (S,) float32), voices, vocabulary."""
    pack = AssetPack()
    if pack.sample_rate != SPOKEN_SAMPLE_RATE:
        raise ValueError(f"{pack.path}: sample_rate {pack.sample_rate}, the spoken task expects {SPOKEN_SAMPLE_RATE}")
    audio = {(v, w): pack.word_audio(v, w) for v in pack.voices for w in pack.vocabulary}
    return audio, pack.voices, pack.vocabulary


def distractor_words() -> tuple[str, ...]:
    """The words a stream says besides its key word: the vocabulary minus the key words and
    their plurals."""
    _, _, vocabulary = _recordings()
    banned = set(KEY_WORDS) | {w + "s" for w in KEY_WORDS}
    return tuple(w for w in vocabulary if w not in banned)


@dataclass(frozen=True)
class SpokenStream:
    """One stream, described (not rendered).

    Attributes:
        words: the spoken words in order.
        voices: the voice of each word.
        starts: start sample of each word (increasing).
        num_samples: length of the stream in samples (the last word's end).
        label: index into :data:`KEY_WORDS` of the key word.
        key_index: position of the key word in ``words``.
        seed: the string seed the stream was drawn from.
    """

    words: tuple[str, ...]
    voices: tuple[str, ...]
    starts: tuple[int, ...]
    num_samples: int
    label: int
    key_index: int
    seed: str

    @property
    def key_start(self) -> int:
        """Start sample of the key word."""
        return self.starts[self.key_index]

    @property
    def key_stop(self) -> int:
        """End sample (exclusive) of the key word's recording."""
        audio, _, _ = _recordings()
        return self.key_start + len(audio[(self.voices[self.key_index], self.words[self.key_index])])

    @property
    def key_depth(self) -> float:
        """Where the key word starts, as a fraction of the stream (0 = start, 1 = end)."""
        return self.key_start / max(self.num_samples, 1)

    def render(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stream's samples ``[start, stop)`` as float32 (stop is clipped to the end).

        Shapes: returns (stop - start,)
        """
        stop = self.num_samples if stop is None else min(stop, self.num_samples)
        if not 0 <= start <= stop:
            raise ValueError(f"SpokenStream.render: need 0 <= start <= stop, got start={start}, stop={stop}")
        audio, _, _ = _recordings()
        out = np.zeros(stop - start, dtype=np.float32)
        # the last word starting before `start` may still sound inside the range
        first = max(bisect.bisect_right(self.starts, start) - 1, 0)
        for i in range(first, len(self.words)):
            s = self.starts[i]
            if s >= stop:
                break
            wav = audio[(self.voices[i], self.words[i])]
            lo, hi = max(s, start), min(s + len(wav), stop)
            if lo < hi:
                out[lo - start : hi - start] += wav[lo - s : hi - s]
        return out

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """The stream in consecutive pieces of ``size`` samples (the last one shorter)."""
        if size < 1:
            raise ValueError(f"SpokenStream.chunks: size must be >= 1, got {size}")
        for start in range(0, self.num_samples, size):
            yield self.render(start, start + size)


def make_stream(seed: str, seconds: float, depth: float | None = None) -> SpokenStream:
    """Draw a stream of about ``seconds`` of speech with one key word at a random place.

    Words (distractors, each in a random voice, each followed by a 0.05-0.25 s pause) are
    drawn until the stream reaches ``seconds``; then one of them is replaced by a uniformly
    drawn key word (in a random voice), and the starts recomputed. The replaced word is
    chosen uniformly, or, with ``depth``, it is the word at that fraction of the word list
    (0: the first word, 1: the last), as a needle-in-a-haystack grid places it.

    Raises:
        ValueError: for ``seconds`` < 1 or a ``depth`` outside [0, 1].
    """
    if seconds < 1:
        raise ValueError(f"make_stream: seconds must be >= 1, got {seconds}")
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise ValueError(f"make_stream: depth must be in [0, 1], got {depth}")
    rng = random.Random(seed)
    audio, voices, _ = _recordings()
    pool = distractor_words()
    target = int(seconds * SPOKEN_SAMPLE_RATE)
    words: list[str] = []
    chosen_voices: list[str] = []
    gaps: list[int] = []
    total = 0
    while total < target:
        w, v = rng.choice(pool), rng.choice(voices)
        g = int(rng.uniform(*_GAP_SECONDS) * SPOKEN_SAMPLE_RATE)
        words.append(w)
        chosen_voices.append(v)
        gaps.append(g)
        total += len(audio[(v, w)]) + g
    key_index = rng.randrange(len(words))
    if depth is not None:
        key_index = round(depth * (len(words) - 1))
    label = rng.randrange(len(KEY_WORDS))
    words[key_index] = KEY_WORDS[label]
    chosen_voices[key_index] = rng.choice(voices)
    starts, pos = [], 0
    for w, v, g in zip(words, chosen_voices, gaps):
        starts.append(pos)
        pos += len(audio[(v, w)]) + g
    num_samples = starts[-1] + len(audio[(chosen_voices[-1], words[-1])])  # no pause after the last word
    return SpokenStream(tuple(words), tuple(chosen_voices), tuple(starts), num_samples, label, key_index, seed)


class SpokenLongDataset:
    """Map-style data set of spoken streams, rendered whole when read (for training and
    evaluation at lengths that fit; stream longer ones with :meth:`SpokenStream.chunks`).

    Item ``i`` is ``{"id", "audio": (S,) float32, "label", "key_depth", "key_span"}`` (the
    key word's ``(start, stop)`` samples, for a frame-level loss) of
    ``make_stream(stream_seed(seed, split, i), seconds)``, where ``seconds`` is drawn
    (from the same seed) uniformly in ``[min_seconds, max_seconds]``.

    Args:
        split: name mixed into the seeds ("train", "val", "test").
        num_samples: number of streams.
        min_seconds: shortest stream.
        max_seconds: longest stream.
        seed: data seed.
    """

    def __init__(self, split: str, num_samples: int, min_seconds: float, max_seconds: float, seed: int = 0) -> None:
        if num_samples < 1:
            raise ValueError(f"SpokenLongDataset: num_samples must be >= 1, got {num_samples}")
        if not 1 <= min_seconds <= max_seconds:
            raise ValueError(
                f"SpokenLongDataset: need 1 <= min_seconds <= max_seconds, got {min_seconds}, {max_seconds}"
            )
        self.split = split
        self.num_samples = num_samples
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def stream(self, index: int) -> SpokenStream:
        """The description of stream ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"SpokenLongDataset[{self.split}]: index {index} out of range({self.num_samples})")
        seed = stream_seed(self.seed, self.split, index)
        seconds = random.Random(seed + "-length").uniform(self.min_seconds, self.max_seconds)
        return make_stream(seed, seconds)

    def __getitem__(self, index: int) -> dict:
        s = self.stream(index)
        return {
            "id": s.seed, "audio": s.render(), "label": s.label, "key_depth": s.key_depth,
            "key_span": (s.key_start, s.key_stop),
        }


def collate_spoken(items: list[dict]):  # noqa: ANN201 - returns a MultimodalBatch (imported lazily)
    """Pad a list of :class:`SpokenLongDataset` items into a batch.

    Shapes: returns a MultimodalBatch with ``inputs["audio"]``: data (B, S) float32 and mask
    (B, S) bool (prefixes), ``targets["label"]`` (B,) long, ``targets["key_span"]`` (B, 2)
    long (the key word's start and stop sample; items without one: no such target);
    ``meta["key_depth"]``.
    """
    import torch

    from mmctx.types import ModalityInput, MultimodalBatch

    S = max(len(it["audio"]) for it in items)
    data = torch.zeros(len(items), S)
    mask = torch.zeros(len(items), S, dtype=torch.bool)
    for b, it in enumerate(items):
        n = len(it["audio"])
        data[b, :n] = torch.from_numpy(it["audio"])
        mask[b, :n] = True
    targets = {"label": torch.tensor([it["label"] for it in items], dtype=torch.long)}
    if all("key_span" in it for it in items):
        targets["key_span"] = torch.tensor([list(it["key_span"]) for it in items], dtype=torch.long)  # (B, 2)
    return MultimodalBatch(
        inputs={"audio": ModalityInput(data, mask)},
        targets=targets,
        ids=[it["id"] for it in items],
        meta={"key_depth": [it["key_depth"] for it in items]},
    )
