"""TextDecoder.generate: beam search, sampling, n-gram bans, repetition penalty, overfitting."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmctx.heads import TextDecoder
from mmctx.heads.generation import apply_repetition_penalty, ban_repeated_ngrams, filter_top_k, filter_top_p
from mmctx.types import ExtendedContext

PAD, BOS, EOS = 0, 1, 2  # the special ids of the decoders tests/heads/conftest.py builds

pytestmark = pytest.mark.usefixtures("one_thread")


def fit(dec: TextDecoder, context: ExtendedContext, sequences: list[list[int]], steps: int, lr: float = 3e-3) -> float:
    """Teacher-forced training on ``BOS seq EOS`` (padded); returns the final loss."""
    T = max(len(s) for s in sequences) + 2
    rows = [[BOS] + s + [EOS] + [PAD] * (T - len(s) - 2) for s in sequences]
    data = torch.tensor(rows)
    inputs, targets = data[:, :-1], data[:, 1:]
    mask = inputs != PAD
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    dec.train()
    for _ in range(steps):
        logits = dec(inputs, context, mask)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.eval()
    return loss.item()


def strip(row: list[int]) -> list[int]:
    return row[: row.index(EOS)] if EOS in row else row


# ---------------------------------------------------------------- beam search


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("options", [{}, {"no_repeat_ngram_size": 2, "repetition_penalty": 1.5}])
def test_beam_search_with_one_beam_equals_greedy(seed, options, make_context, make_decoder):
    dec = make_decoder(seed)
    c = make_context(seed=seed + 10)
    greedy = dec.generate(c, 20, **options)
    beam = dec.generate(c, 20, strategy="beam", num_beams=1, **options)
    assert torch.equal(greedy, beam)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_scores_at_least_as_well_as_greedy(length_penalty, make_context, make_decoder):
    margins = []
    for seed in range(6):
        dec = make_decoder(seed, vocab_size=12)
        c = make_context((6, 2, 4, 5), seed=seed + 20)
        with torch.no_grad():
            greedy = dec.generate(c, 12)
            beam = dec.generate(c, 12, strategy="beam", num_beams=4, length_penalty=length_penalty)
            margin = dec.score(beam, c, length_penalty) - dec.score(greedy, c, length_penalty)
        margins.append(margin)
    margins = torch.cat(margins)
    assert (margins >= -1e-5).all(), margins
    assert (margins > 1e-3).any()  # it does find better sequences, not only greedy's


def test_exhaustive_beam_search_finds_the_most_likely_sequence(make_context, make_decoder):
    # 4 usable tokens (BOS banned, no EOS), 3 steps, 16 beams: every prefix survives
    dec = make_decoder(7, vocab_size=5, eos_id=None, pad_id=None)
    c = make_context((3, 5), seed=3)
    beam = dec.generate(c, 3, strategy="beam", num_beams=16, length_penalty=0.0)
    words = [0, 2, 3, 4]
    candidates = torch.tensor(list(itertools.product(words, repeat=3)))  # (64, 3)
    with torch.no_grad():
        for b in range(2):
            one = slice(b, b + 1)
            ctx_b = ExtendedContext(
                c.x[one].expand(64, -1, -1), c.mask[one].expand(64, -1), c.modality[one].expand(64, -1)
            )
            best = candidates[dec.score(candidates, ctx_b).argmax()]
            assert torch.equal(beam[b], best)


# ---------------------------------------------------------------- sampling


def test_sampling_with_top_k_one_or_tiny_top_p_equals_greedy(make_context, make_decoder):
    dec = make_decoder(2)
    c = make_context(seed=5)
    greedy = dec.generate(c, 20)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(dec.generate(c, 20, strategy="sample", top_k=1, temperature=2.0, generator=g), greedy)
    assert torch.equal(dec.generate(c, 20, strategy="sample", top_p=1e-6, temperature=2.0, generator=g), greedy)


def test_same_seed_same_samples_and_temperature_matters(make_context, make_decoder):
    dec = make_decoder(3)
    c = make_context(seed=6)

    def sample(seed: int, **kw) -> torch.Tensor:
        return dec.generate(c, 20, strategy="sample", generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(0, top_k=5, top_p=0.9), sample(0, top_k=5, top_p=0.9))
    assert not torch.equal(sample(0, temperature=3.0), sample(1, temperature=3.0))
    # near-zero temperature concentrates all mass on the arg-max
    assert torch.equal(sample(4, temperature=1e-4), dec.generate(c, 20))


def test_filters_on_hand_computed_logits():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_top_k(logits, 2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_top_p(logits, 0.8)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_top_p(logits, 0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_top_p(logits, 1e-9)).tolist() == [[False, True, True, True]]
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isinf(filter_top_p(shuffled, 0.8)).tolist() == [[True, False, True, False]]


def test_repetition_penalty_and_ngram_ban_on_hand_computed_inputs():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    # generated "3 1 3 2 3": bigrams starting with 3 were followed by 1 and 2
    banned = ban_repeated_ngrams(torch.zeros(1, 5), torch.tensor([[3, 1, 3, 2, 3]]), 2)
    assert torch.isinf(banned).tolist() == [[False, True, True, False, False]]
    banned3 = ban_repeated_ngrams(torch.zeros(1, 5), torch.tensor([[3, 1, 3, 2, 3, 1]]), 3)
    assert torch.isinf(banned3).tolist() == [[False, False, False, True, False]]


# ---------------------------------------------------------------- overfitting


def test_decoder_overfits_six_captions_and_generation_reproduces_them(make_context, make_decoder):
    sequences = [[3, 4, 5], [6, 7, 8, 9], [5, 4, 3, 10], [11, 3, 12], [13, 14, 15, 16, 17], [9, 9, 4]]
    c = make_context((4, 6, 3, 5, 6, 2), seed=30)
    dec = make_decoder(31, dropout=0.0)
    loss = fit(dec, c, sequences, steps=150)
    assert loss < 0.05, loss
    for options in ({"strategy": "greedy"}, {"strategy": "beam", "num_beams": 3}, {"strategy": "sample", "top_k": 1}):
        out = dec.generate(c, 10, **options)
        assert [strip(r) for r in out.tolist()] == sequences, options
        assert (out == EOS).sum(1).tolist() == [1] * 6  # each caption ends, then padding
        assert torch.equal(out, dec.generate(c, 10, use_cache=False, **options))


@pytest.fixture(scope="module")
def repeater(make_context, make_decoder) -> tuple[TextDecoder, ExtendedContext]:
    """A decoder trained to say "a b a b a b" (a=3, b=4): biased to repeat."""
    c = make_context((3, 5), seed=40)
    dec = make_decoder(41)
    fit(dec, c, [[3, 4, 3, 4, 3, 4]] * 2, steps=30)
    return dec, c


def bigrams(row: list[int]) -> list[tuple[int, int]]:
    return list(zip(row, row[1:]))


def test_repeater_repeats_and_no_repeat_ngram_stops_it(repeater):
    dec, c = repeater
    assert [strip(r) for r in dec.generate(c, 12).tolist()] == [[3, 4, 3, 4, 3, 4]] * 2
    for options in ({"strategy": "greedy"}, {"strategy": "beam", "num_beams": 3}, {"strategy": "sample"}):
        out = dec.generate(c, 12, no_repeat_ngram_size=2, generator=torch.Generator().manual_seed(0), **options)
        for row in out.tolist():
            grams = bigrams(strip(row))
            assert len(grams) == len(set(grams)), (options, row)


def test_repetition_penalty_changes_the_repeater(repeater):
    dec, c = repeater
    plain = dec.generate(c, 12)
    penalized = dec.generate(c, 12, repetition_penalty=10.0)
    assert not torch.equal(plain, penalized)
    assert torch.equal(dec.generate(c, 12, repetition_penalty=1.0), plain)
