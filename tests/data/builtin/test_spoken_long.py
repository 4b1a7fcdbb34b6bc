"""The spoken long-context generator: deterministic, one key word, renders in pieces."""

from __future__ import annotations

import numpy as np
import pytest

from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.data.builtin.spoken_long import (
    KEY_WORDS,
    SPOKEN_SAMPLE_RATE,
    SpokenLongDataset,
    collate_spoken,
    distractor_words,
    make_stream,
)


def test_deterministic_and_one_key_word() -> None:
    a, b = make_stream("0-train-3", 20.0), make_stream("0-train-3", 20.0)
    assert a == b
    assert make_stream("0-train-4", 20.0) != a
    keys = [i for i, w in enumerate(a.words) if w in KEY_WORDS or w.rstrip("s") in KEY_WORDS]
    assert keys == [a.key_index]
    assert a.words[a.key_index] == KEY_WORDS[a.label]
    assert 19.0 * SPOKEN_SAMPLE_RATE <= a.num_samples <= 22.0 * SPOKEN_SAMPLE_RATE
    assert not set(distractor_words()) & (set(KEY_WORDS) | {w + "s" for w in KEY_WORDS})
    assert list(a.starts) == sorted(a.starts)


def test_render_in_pieces_equals_whole() -> None:
    s = make_stream("0-test-1", 12.0)
    whole = s.render()
    assert whole.shape == (s.num_samples,) and whole.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate(list(s.chunks(7001))), whole)
    np.testing.assert_array_equal(s.render(12345, 23456), whole[12345:23456])
    # the key word's recording is where the description says
    rec = AssetPack().word_audio(s.voices[s.key_index], KEY_WORDS[s.label])
    np.testing.assert_array_equal(s.render(s.key_start, s.key_start + len(rec)), rec)
    assert s.key_stop == s.key_start + len(rec)
    # pauses of >= 0.05 s around it: silence just outside the span
    assert not s.render(s.key_stop, s.key_stop + 800).any()


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_depth_places_the_key(depth: float) -> None:
    s = make_stream("0-test-2", 30.0, depth=depth)
    assert s.key_index == round(depth * (len(s.words) - 1))
    assert abs(s.key_depth - depth) < 0.05


def test_dataset_and_collate() -> None:
    ds = SpokenLongDataset("val", 3, 2.0, 4.0, seed=1)
    items = [ds[i] for i in range(3)]
    assert [it["id"] for it in items] == ["1-val-0", "1-val-1", "1-val-2"]
    batch = collate_spoken(items)
    audio = batch.inputs["audio"]
    assert audio.data.shape == audio.mask.shape and audio.data.shape[0] == 3
    assert audio.mask.sum(dim=1).tolist() == [len(it["audio"]) for it in items]
    assert batch.targets["label"].tolist() == [it["label"] for it in items]
    spans = batch.targets["key_span"]
    assert spans.shape == (3, 2) and spans.tolist() == [[ds.stream(i).key_start, ds.stream(i).key_stop] for i in range(3)]
    assert (spans[:, 1] - spans[:, 0] > 0).all() and (spans[:, 1] <= audio.mask.sum(dim=1)).all()
    with pytest.raises(IndexError):
        ds.stream(3)
