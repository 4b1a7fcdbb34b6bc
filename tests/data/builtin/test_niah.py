"""The NIAH generator: deterministic, exact length, needle at the asked depth, fresh seeds."""

from __future__ import annotations

import pytest

from mmctx.data.builtin.long_range import DISTRACTOR_COLOURS, KEY_WORD, LONG_RANGE_CLASSES, LONG_RANGE_COLOURS
from mmctx.data.builtin.niah import make_niah_sample, niah_samples


@pytest.mark.parametrize("num_tokens", [16, 17, 100, 1024, 4099])
@pytest.mark.parametrize("depth", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_exact_length_and_needle_at_the_asked_depth(num_tokens, depth):
    s = make_niah_sample(f"t:{num_tokens}:{depth}", num_tokens, depth).sample
    tokens = s.text.split(" ")
    assert len(tokens) == s.num_tokens == num_tokens
    start = s.fact_token - 3  # the key sentence's first token
    assert tokens[start:start + 5] == ["the", KEY_WORD, "is", s.colour, "."]
    assert start == 0 or tokens[start - 1] == "."  # at a sentence boundary
    # nearest boundary: within half of the longest sentence (7 tokens) of the asked place
    assert abs(start - depth * (num_tokens - 5)) <= 3.5
    # the needle is the only key sentence and its colour is stated nowhere else
    assert tokens.count(KEY_WORD) == 1
    assert sum(t in LONG_RANGE_COLOURS for t in tokens) == 1
    assert set(tokens) & set(DISTRACTOR_COLOURS) or num_tokens < 64
    assert LONG_RANGE_CLASSES[s.label] == f"{s.category}-{s.colour}"


def test_depth_extremes_are_first_and_last_sentence():
    first = make_niah_sample("e", 2048, 0.0).sample
    last = make_niah_sample("e", 2048, 1.0).sample
    assert first.fact_token == 3 and last.fact_token == 2048 - 2


def test_deterministic_and_fresh():
    a = niah_samples(512, 0.3, 4, seed=0)
    b = niah_samples(512, 0.3, 4, seed=0)
    assert [x.sample for x in a] == [x.sample for x in b]
    assert [x.image.tobytes() for x in a] == [x.image.tobytes() for x in b]
    assert len({x.sample.text for x in a}) == 4  # samples differ from each other
    other = niah_samples(512, 0.3, 4, seed=1)
    assert {x.sample.text for x in a}.isdisjoint({x.sample.text for x in other})
    assert all(x.sample.seed.startswith("mmctx-niah:") for x in a)  # not the training data's streams
    assert a[0].image.size == (32, 32) and a[0].image.mode == "RGB"


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_tokens"):
        make_niah_sample("x", 15, 0.5)
    with pytest.raises(ValueError, match="depth"):
        make_niah_sample("x", 100, 1.5)
