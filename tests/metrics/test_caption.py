"""Caption metrics against values computed by hand on tiny examples and against
pycocoevalcap's scorers (its numbers written in, so pycocoevalcap is not needed here)."""

from __future__ import annotations

import math
import random

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
from mmctx.metrics.caption import _lcs

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
    # coco's epsilons: p4 = (0 + 1e-15) / (3 + 1e-9), so not 0 but tiny (pycocoevalcap: 8.03e-05)
    assert scores["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1e-15 / 3) ** (1 / 4), rel=1e-6)
    assert scores["bleu4"] == pytest.approx(8.034284186199331e-05, rel=1e-9)


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
    # P = 2/2, R = 2/4 → F1 = 2/3 with beta = 1; mean over samples, best reference per sample
    two = (["the cat", "a dog"], [["the cat is here"], ["x y", "a dog"]])
    assert rouge_l(*two, beta=1.0) == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)
    # coco's beta = 1.2 (the default): (1 + b^2) P R / (R + b^2 P)
    f = (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1)
    assert rouge_l(*two) == pytest.approx((f + 1) / 2, abs=1e-9)
    assert caption_metrics(*two)["rougeL"] == pytest.approx((f + 1) / 2, abs=1e-9)
    assert caption_metrics(*two, rouge_beta=1.0)["rougeL"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-9)


def test_rouge_l_maximises_precision_and_recall_over_references_separately():
    # "a b" gives P = 2/4, R = 1; the long reference P = 1, R = 4/8: coco takes P = R = 1
    assert rouge_l(["a b c d"], [["a b", "a b c d e f g h"]]) == pytest.approx(1.0)


def test_bit_parallel_lcs_equals_the_dynamic_programme():
    def dp(a: list[str], b: list[str]) -> int:
        prev = [0] * (len(b) + 1)
        for x in a:
            cur = [0]
            for j, y in enumerate(b):
                cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
            prev = cur
        return prev[-1]

    rng = random.Random(0)
    for _ in range(300):
        a = rng.choices("abcde", k=rng.randint(0, 70))
        b = rng.choices("abcdef", k=rng.randint(0, 70))
        assert _lcs(a, b) == dp(a, b)


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
    for key in ("rougeL", "cider", "exact_match"):
        assert m[key] == 0.0, key
    for key in ("bleu1", "bleu2", "bleu3", "bleu4"):  # coco's epsilons: 0 matches → tiny, not 0
        assert 0.0 <= m[key] < 1e-3, key


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


# ----------------------------------------------------------------------------- parity with pycocoevalcap
# The numbers below were printed by pycocoevalcap 1.2 (Bleu(4) with option "closest", Rouge with
# beta 1.2, Cider with sigma 6) on the same captions after mmctx's normalisation.

PARITY = {
    "mixed": (
        ["a man riding a wave on top of a surfboard", "two dogs play in the grass", "a plate of food with broccoli", "a red bus"],
        [
            ["a surfer rides a large wave in the ocean", "a man on a surfboard riding a wave", "man surfing"],
            ["two dogs playing together on a grassy field", "dogs play in grass"],
            ["a plate with broccoli and rice on it", "food on a plate", "a white plate of broccoli chicken and rice", "broccoli"],
            ["a red double decker bus on a street", "a bus"],
        ],
        [0.8799999999648, 0.6789347398034606, 0.378511471024627, 4.5193236687396874e-05],
        (0.8066946109298738, [0.5669144981412639, 0.8299319727891156, 0.8299319727891156, 1.0]),
        (1.8457667342898045, [1.4196250990379964, 2.596267908283859, 1.6818375058886028, 1.68533642394876]),
    ),
    # an empty hypothesis, a one-word hypothesis, references of different lengths
    "empty_and_one_word": (
        ["", "dog", "The cat sat on the mat."],
        [["a dog runs", "the dog"], ["a dog runs", "dog"], ["the cat is on the mat", "a cat on a mat", "cat"]],
        [0.6441233938804958, 0.538912295799877, 0.37928355997512203, 6.080253211921888e-05],
        (0.6414141414141413, [0.0, 1.0, 0.9242424242424241]),
        (1.462787045193955, [0.0, 2.086117943989499, 2.3022431915923667]),
    ),
}


@pytest.mark.parametrize("case", sorted(PARITY))
def test_values_equal_pycocoevalcap(case):
    cands, refs, coco_bleu, (coco_rouge, _), (coco_cider, coco_cider_per_sample) = PARITY[case]
    assert list(bleu(cands, refs).values()) == pytest.approx(coco_bleu, abs=1e-9)
    assert rouge_l(cands, refs, beta=1.2) == pytest.approx(coco_rouge, abs=1e-9)
    score, per_sample = cider_d(cands, refs)
    assert score == pytest.approx(coco_cider, abs=1e-9)
    assert per_sample == pytest.approx(coco_cider_per_sample, abs=1e-9)
    m = caption_metrics(cands, refs)
    assert [m[f"bleu{n}"] for n in range(1, 5)] == pytest.approx(coco_bleu, abs=1e-9)
    assert m["rougeL"] == pytest.approx(coco_rouge, abs=1e-9)
    assert m["cider"] == pytest.approx(coco_cider, abs=1e-9)


def test_rouge_l_per_sample_values_equal_pycocoevalcap():
    for cands, refs, _, (_, per_sample), _ in PARITY.values():
        for c, rs, expected in zip(cands, refs, per_sample):
            assert rouge_l([c], [rs]) == pytest.approx(expected, abs=1e-9)


def test_empty_split_and_edge_cases():
    assert caption_metrics([], [])["bleu4"] == 0.0
    assert cider_d([], []) == (0.0, [])
    assert rouge_l([], []) == 0.0
    # an empty candidate scores 0 everywhere (BLEU: brevity penalty exp(1 - r/0) → 0)
    m = caption_metrics([""], [["a dog"]])
    assert m["bleu1"] == pytest.approx(0.0, abs=1e-12) and m["rougeL"] == 0.0 and m["cider"] == 0.0
    # a reference that is only punctuation normalises to "", as does an empty candidate: identical
    assert rouge_l(["."], [["!"]]) == 1.0 and exact_match(["."], [["!"]]) == 1.0
