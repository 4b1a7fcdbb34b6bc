"""Caption metrics against values computed by hand on tiny examples."""

from __future__ import annotations

import math

import pytest

from mmctx.metrics import (
    bleu,
    caption_metrics,
    caption_tokens,
    cider_d,
    distinct_ratio,
    exact_match,
    normalize_caption,
    rouge_l,
)

CAND = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_normalisation_lowercases_and_drops_punctuation():
    assert caption_tokens("A dog, two Cats.") == ["a", "dog", "two", "cats"]
    assert normalize_caption("a cat , a bus and a rose") == "a cat a bus and a rose"
    assert normalize_caption("  Hello --  world !") == "hello world"


def test_bleu_matches_hand_computed_precisions():
    # clipped n-gram precisions: p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3; equal lengths, BP = 1
    scores = bleu([CAND], [[REF]])
    assert scores["bleu1"] == pytest.approx(5 / 6, abs=1e-6)
    assert scores["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    assert scores["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), abs=1e-6)
    assert scores["bleu4"] == 0.0


def test_bleu_brevity_penalty_and_closest_reference_length():
    # candidate of 2 words, all matching; closest reference length 4 → BP = exp(1 - 4/2)
    assert bleu(["the cat"], [["the cat is here"]])["bleu1"] == pytest.approx(math.exp(-1), abs=1e-6)
    # with a 2-word reference among the references, the closest length is 2: no penalty
    assert bleu(["the cat"], [["the cat is here", "the cat"]])["bleu1"] == pytest.approx(1.0)


def test_bleu_is_corpus_level():
    # counts are pooled: p1 = (2 + 1) / (2 + 2), lengths 4 vs 4
    assert bleu(["a cat", "a dog"], [["a cat"], ["a pig"]])["bleu1"] == pytest.approx(3 / 4, abs=1e-6)


def test_rouge_l_f1_from_the_longest_common_subsequence():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat": 5 of 6 both ways
    assert rouge_l([CAND], [[REF]]) == pytest.approx(5 / 6, abs=1e-6)
    # P = 2/2, R = 2/4 → F1 = 2/3; mean over samples, best reference per sample
    assert rouge_l(["the cat", "a dog"], [["the cat is here"], ["x y", "a dog"]]) == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)


def test_cider_d_hand_computed():
    # two samples → N = 2; df: "a" 2, every other n-gram 1 → its idf is log 2, "a"'s is 0.
    # sample 0 "a cat" vs "a cat": n=1 and n=2 cosine 1, n=3,4 empty (0) → 10 * (1+1+0+0)/4
    # sample 1 "a cat" vs "a dog": only "a" is shared and it weighs 0 → 0
    score, per_sample = cider_d(["a cat", "a cat"], [["a cat"], ["a dog"]])
    assert per_sample == pytest.approx([5.0, 0.0])
    assert score == pytest.approx(2.5)


def test_cider_d_clipping_and_length_penalty():
    # "a cat cat" vs "a cat" (N = 2 as above):
    #   n=1: c = {a: 0, cat: 2 log2}, r = {a: 0, cat: log2}; clipped dot min(2log2, log2)·log2
    #        over |c||r| = 2log2·log2 → 1/2
    #   n=2: c = {a cat: log2, cat cat: log2 (df 0)}, r = {a cat: log2} → 1/sqrt(2)
    #   n=3: r has no 3-grams → 0;  length penalty exp(-(3-2)^2 / (2·6^2))
    _, per_sample = cider_d(["a cat cat", "x"], [["a cat"], ["a dog"]])
    expected = 10 * (0.5 + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert per_sample[0] == pytest.approx(expected, rel=1e-9)


def test_cider_d_averages_over_references():
    # sample 0 has two references, one identical (5.0 as above, N = 2) and one disjoint (0)
    _, per_sample = cider_d(["a cat", "a dog"], [["a cat", "the bus"], ["a dog"]])
    # df is per sample: "a" appears in both samples' references → weight 0 again
    assert per_sample[0] == pytest.approx(5.0 / 2)


def test_identical_captions_score_the_maximum_and_disjoint_ones_zero():
    refs = [["a dog chases a red ball"], ["two cats sleep on the sofa"], ["a man rides a bike"]]
    same = [r[0] for r in refs]
    m = caption_metrics(same, refs)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "exact_match", "distinct"):
        assert m[key] == pytest.approx(1.0), key
    assert m["cider"] == pytest.approx(10.0)  # every n-gram is rare (df 1 of 3): cosine 1 at n = 1..4

    disjoint = ["green hills far away", "blue water here now", "loud music plays there"]
    m = caption_metrics(disjoint, refs)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider", "exact_match"):
        assert m[key] == 0.0, key


def test_exact_match_and_distinct_ratio():
    refs = [["A cat."], ["a dog", "the dog"], ["a cow"]]
    assert exact_match(["a cat", "the dog", "a pig"], refs) == pytest.approx(2 / 3)
    assert distinct_ratio(["a cat", "A cat.", "a dog", "a cow"]) == pytest.approx(3 / 4)
    m = caption_metrics(["a cat", "a cat", "a cat"], refs)
    assert m["distinct"] == pytest.approx(1 / 3) and m["ref_distinct"] == pytest.approx(1.0)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="2 candidates but 1 reference"):
        caption_metrics(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"references\[0\] must be a non-empty list"):
        caption_metrics(["a"], [[]])
    with pytest.raises(ValueError, match=r"references\[0\]"):
        caption_metrics(["a"], ["a"])
