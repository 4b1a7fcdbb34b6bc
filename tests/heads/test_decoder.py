"""TextDecoder: shapes, gradients, padding invariance, KV cache equivalence, errors."""

from __future__ import annotations

import pytest
import torch

from mmctx.heads import DecoderCache, TextDecoder
from mmctx.types import ExtendedContext

PAD, BOS, EOS = 0, 1, 2  # the special ids of the decoders tests/heads/conftest.py builds

pytestmark = pytest.mark.usefixtures("one_thread")


def with_noisy_padding(c: ExtendedContext, value: float = 77.0) -> ExtendedContext:
    return ExtendedContext(c.x.masked_fill(~c.mask[..., None], value), c.mask, c.modality, c.names)


def random_tokens(B: int, T: int, seed: int = 2, vocab: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, vocab, (B, T), generator=g)
    tokens[:, 0] = BOS
    return tokens


@pytest.mark.parametrize("tie", [True, False])
def test_logits_shape_and_gradients_reach_every_parameter(tie, make_context, make_decoder, assert_gradients):
    dec = make_decoder(tie_embeddings=tie, dropout=0.1, context_dim=24).train().double()
    c = make_context(d=24)
    c = ExtendedContext(c.x.double(), c.mask, c.modality, c.names)
    tokens = random_tokens(3, 6)
    logits = dec(tokens, c)
    assert logits.shape == (3, 6, 20)
    targets = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(logits.reshape(-1, 20), targets.reshape(-1)).backward()
    assert_gradients(dec)
    assert (dec.lm_head is None) == tie


def test_padded_context_positions_never_change_logits_or_generation(make_context, make_decoder):
    dec = make_decoder()
    c, noisy = make_context(), with_noisy_padding(make_context())
    tokens = random_tokens(3, 8)
    assert torch.allclose(dec(tokens, c), dec(tokens, noisy), atol=1e-6)
    for strategy in ("greedy", "beam", "sample"):
        for use_cache in (True, False):
            kw = dict(strategy=strategy, num_beams=3, use_cache=use_cache)
            a = dec.generate(c, 10, generator=torch.Generator().manual_seed(0), **kw)
            b = dec.generate(noisy, 10, generator=torch.Generator().manual_seed(0), **kw)
            assert torch.equal(a, b), (strategy, use_cache)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_batch_of_different_context_lengths_generates_as_each_sample_alone(strategy, make_context, make_decoder):
    dec = make_decoder(seed=3)
    lengths = (5, 2, 7, 4)
    c = make_context(lengths, seed=4)
    batch = dec.generate(c, 12, strategy=strategy, num_beams=3)
    for b, n in enumerate(lengths):
        alone = ExtendedContext(c.x[b : b + 1, :n], c.mask[b : b + 1, :n], c.modality[b : b + 1, :n])
        single = dec.generate(alone, 12, strategy=strategy, num_beams=3)[0]
        row = batch[b]
        assert torch.equal(row[: single.shape[0]], single), (b, row, single)
        assert (row[single.shape[0] :] == PAD).all()  # the batch only adds padding after EOS


def test_token_padding_right_or_left_never_changes_real_positions(make_context, make_decoder):
    dec = make_decoder()
    c = make_context((4, 6))
    tokens = random_tokens(2, 5)
    ref = dec(tokens, c)
    right = torch.cat([tokens, torch.full((2, 3), PAD)], 1)
    right_mask = torch.arange(8)[None].expand(2, 8) < 5
    assert torch.allclose(dec(right, c, right_mask)[:, :5], ref, atol=1e-5)
    left = torch.cat([torch.full((2, 3), PAD), tokens], 1)
    left_mask = torch.arange(8)[None].expand(2, 8) >= 3
    assert torch.allclose(dec(left, c, left_mask)[:, 3:], ref, atol=1e-5)


@pytest.mark.parametrize("prompt_len", [1, 3, 6])
def test_cached_step_logits_equal_full_forward_for_prompt_then_single_tokens(prompt_len, make_context, make_decoder):
    dec = make_decoder(seed=5)
    c = make_context(seed=6)
    tokens = random_tokens(3, 12, seed=7)
    full = dec(tokens, c)
    cache = dec.init_cache(c, capacity=12)
    assert isinstance(cache, DecoderCache)
    pieces = [dec.step(tokens[:, :prompt_len], cache)]  # a multi-token prompt, then a long cache
    for i in range(prompt_len, 12):
        pieces.append(dec.step(tokens[:, i : i + 1], cache))
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=0)


def test_cached_chunks_of_several_tokens_keep_causal_alignment(make_context, make_decoder):
    # a short query (3 tokens) against a longer cache: the fused SDPA is_causal would align it
    # top-left and let the first new token see the later ones
    dec = make_decoder(seed=8)
    c = make_context(seed=9)
    tokens = random_tokens(3, 12, seed=10)
    full = dec(tokens, c)
    cache = dec.init_cache(c, capacity=12)
    chunks = [dec.step(tokens[:, i : i + 3], cache) for i in range(0, 12, 3)]
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_cached_and_uncached_generation_see_identical_logits_at_every_step(strategy, make_context, make_decoder):
    dec = make_decoder(seed=11)
    c = make_context(seed=12)
    records: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    current: list[bool] = [True]

    def hook(module, inputs, output):  # the final norm sees (N, 1, D) cached, (N, D) uncached
        records[current[0]].append(output.reshape(output.shape[0], -1, output.shape[-1])[:, -1].clone())

    handle = dec.norm.register_forward_hook(hook)
    outs = {}
    for use_cache in (True, False):
        current[0] = use_cache
        outs[use_cache] = dec.generate(
            c, 15, strategy=strategy, num_beams=3, use_cache=use_cache, generator=torch.Generator().manual_seed(3),
            no_repeat_ngram_size=3, repetition_penalty=1.3,
        )
    handle.remove()
    assert torch.equal(outs[True], outs[False])
    assert len(records[True]) == len(records[False]) > 1
    for a, b in zip(records[True], records[False]):
        logits_a, logits_b = dec._logits(a), dec._logits(b)
        torch.testing.assert_close(logits_a, logits_b, atol=1e-5, rtol=0)


def steer_eos(dec: TextDecoder, rows_per_sample: int = 1) -> None:
    """Rig an untied decoder's logits so both endings occur: sample 0 says EOS from its 4th
    token on, sample 2 can never say it, sample 1 is left to the model."""
    calls = []

    def hook(module, inputs, logits):  # (N, t, V) or (N, V), N = samples × rows_per_sample
        logits = logits.clone()
        if len(calls) >= 3:
            logits[:rows_per_sample, ..., EOS] = 1e4
        logits[2 * rows_per_sample : 3 * rows_per_sample, ..., EOS] = -1e4
        calls.append(1)
        return logits

    dec.lm_head.register_forward_hook(hook)


def test_generate_output_format_and_inference_mode(make_context, make_decoder):
    dec = make_decoder(seed=13, tie_embeddings=False)
    steer_eos(dec)
    c = make_context()
    with torch.inference_mode():
        out = dec.generate(c, 30)
    assert out.dtype == torch.long and out.shape == (3, 30)  # sample 2 never ends
    assert not (out == BOS).any()
    rows = out.tolist()
    assert rows[0].index(EOS) == 3 and rows[0][4:] == [PAD] * 26  # an ended sample is padded
    assert EOS not in rows[2] and PAD not in rows[2]  # an open one is not
    for row in rows:  # and sample 1, whichever it is
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])
        else:
            assert PAD not in row


def test_generation_without_eos_has_exact_length_and_empty_context_rows_are_finite(make_context, make_decoder):
    dec = make_decoder(seed=14, eos_id=None)
    c = make_context((4, 3))
    c.mask[1] = False  # a sample with no context at all: cross-attention reads nothing
    for strategy in ("greedy", "beam", "sample"):
        assert dec.generate(c, 9, strategy=strategy, num_beams=2).shape == (2, 9)
    assert torch.isfinite(dec(random_tokens(2, 4), c)).all()


def test_pad_falls_back_to_eos_when_tokenizer_has_no_pad(make_context, make_decoder):
    dec = make_decoder(seed=15, pad_id=None, tie_embeddings=False)
    steer_eos(dec, rows_per_sample=2)
    out = dec.generate(make_context(), 25, strategy="beam", num_beams=2)
    assert out.shape == (3, 25)
    rows = out.tolist()
    assert EOS in rows[0] and EOS not in rows[2]
    for row in rows:
        if EOS in row:
            assert row.index(EOS) < 25 - 1 and all(t == EOS for t in row[row.index(EOS) :])


def test_constructor_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        TextDecoder()
    with pytest.raises(ValueError, match="bos_id=20 is out of range"):
        TextDecoder(20, bos_id=20)
    with pytest.raises(ValueError, match="eos_id=-1 is out of range"):
        TextDecoder(20, eos_id=-1)
    with pytest.raises(ValueError, match="pad_id=25 is out of range"):
        TextDecoder(20, pad_id=25)
    with pytest.raises(ValueError, match="distinct"):
        TextDecoder(20, pad_id=2, bos_id=1, eos_id=2)
    with pytest.raises(ValueError, match="divisible"):
        TextDecoder(20, dim=30, num_heads=4)


def test_input_errors_name_the_argument(make_context, make_decoder):
    dec = make_decoder()
    c = make_context()
    with pytest.raises(ValueError, match="TextDecoder tokens"):
        dec(torch.zeros(3, dtype=torch.long), c)
    with pytest.raises(ValueError, match="integer ids"):
        dec(torch.zeros(3, 4), c)
    with pytest.raises(ValueError, match="max_seq_len=40"):
        dec(torch.zeros(3, 41, dtype=torch.long), c)
    with pytest.raises(ValueError, match=r"context.x: dimension 0 should be 2"):
        dec(torch.zeros(2, 4, dtype=torch.long), c)
    with pytest.raises(ValueError, match=r"context.x: dimension 2 should be 32"):
        dec(torch.zeros(3, 4, dtype=torch.long), make_context(d=16))
    with pytest.raises(ValueError, match="token_mask"):
        dec(torch.zeros(3, 4, dtype=torch.long), c, torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="strategy"):
        dec.generate(c, 5, strategy="nucleus")
    with pytest.raises(ValueError, match="max_new_tokens"):
        dec.generate(c, 40)
    with pytest.raises(ValueError, match="top_p"):
        dec.generate(c, 5, strategy="sample", top_p=0.0)
    with pytest.raises(ValueError, match="bos_id is not set"):
        make_decoder(bos_id=None).generate(c, 5)
    cache = dec.init_cache(c, capacity=4)
    dec.step(random_tokens(3, 3), cache)
    with pytest.raises(ValueError, match="cache holds 4 tokens"):
        dec.step(random_tokens(3, 2), cache)


def test_forward_traces_as_one_graph_without_breaks(make_context, make_decoder):
    # torch.compile of a model containing the decoder: any graph break or data-dependent
    # Python branch in the teacher-forced forward would split it (dynamo only, no codegen)
    dec = make_decoder(seed=13)
    c = make_context(seed=14)  # padded context rows
    tokens = random_tokens(3, 6, seed=15)
    token_mask = torch.ones(3, 6, dtype=torch.bool)
    token_mask[0, 4:] = False
    torch._dynamo.reset()
    explained = torch._dynamo.explain(dec)(tokens, c, token_mask)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_decode_over_a_long_cached_context_equals_uncached(make_context, make_decoder):
    # generation over a long document: the context's cross-attention keys/values are
    # projected once into the cache; recomputing them at every step gives the same tokens
    dec = make_decoder(seed=16, dim=16, num_heads=2, eos_id=None)
    c = make_context(lengths=(4096, 2500, 3333), d=16, seed=17)
    cache = dec.init_cache(c, capacity=8)
    assert cache.layers[0].cross_kv[0].shape == (3, 2, 4096, 8)  # (B, H, M, D/H), computed once
    tokens = random_tokens(3, 8, seed=18)
    cached = torch.cat([dec.step(tokens[:, i : i + 1], cache) for i in range(8)], 1)
    torch.testing.assert_close(cached, dec(tokens, c), atol=1e-5, rtol=0)
    for strategy in ("greedy", "beam"):
        a = dec.generate(c, 7, strategy=strategy, num_beams=2)
        b = dec.generate(c, 7, strategy=strategy, num_beams=2, use_cache=False)
        assert torch.equal(a, b), strategy


def test_static_cache_is_filled_in_place_and_handles_rows_without_context(make_context, make_decoder):
    dec = make_decoder(seed=19)
    c = make_context(lengths=(5, 0, 7), seed=20)  # sample 1 has no real context token
    cache = dec.init_cache(c, capacity=10)
    assert cache.empty_rows is not None and cache.empty_rows.flatten().tolist() == [False, True, False]
    tokens = random_tokens(3, 10, seed=21)
    pieces = [dec.step(tokens[:, :2], cache)]
    buffers = [(layer.k.data_ptr(), layer.v.data_ptr()) for layer in cache.layers]
    assert cache.layers[0].k.shape[2] == 10  # allocated at full capacity on the first step
    pieces += [dec.step(tokens[:, i : i + 1], cache) for i in range(2, 10)]
    assert [(layer.k.data_ptr(), layer.v.data_ptr()) for layer in cache.layers] == buffers  # never regrown
    torch.testing.assert_close(torch.cat(pieces, 1), dec(tokens, c), atol=1e-5, rtol=0)
    assert torch.equal(dec.generate(c, 9), dec.generate(c, 9, use_cache=False))


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("length_scale_ref", [None, 4])
def test_static_step_equals_step_at_every_position(tie, length_scale_ref, make_context, make_decoder):
    """The fixed-shape step (whole buffer attended, unfilled positions masked) gives step's
    logits, with padded contexts and a row with no context at all (and with length-scaled
    cross-attention: the scaled keys are cached once for both)."""
    dec = make_decoder(seed=23, tie_embeddings=tie, length_scale_ref=length_scale_ref)
    c = make_context(lengths=(5, 0, 7), seed=24)
    tokens = random_tokens(3, 9, seed=25)
    dynamic, static = dec.init_cache(c, capacity=9), dec.init_cache(c, capacity=9)
    for i in range(9):
        a = dec.step(tokens[:, i : i + 1], dynamic)
        b = dec.static_step(tokens[:, i : i + 1], static)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert static.length == 9 and static.layers[0].k.shape[2] == 9
    with pytest.raises(ValueError, match="full"):
        dec.static_step(tokens[:, :1], static)
    with pytest.raises(ValueError, match="eval mode"):
        dec.train().static_step(tokens[:, :1], dec.init_cache(c, capacity=9))


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_generate_through_the_static_step_gives_the_same_tokens(strategy, make_context, make_decoder, monkeypatch):
    """generate(compile_step=True)'s wiring, with the step run eagerly (the compiled graph is
    tested below, slow): the same tokens as the dynamic cache, beams reordering the buffers."""
    import mmctx.heads.decoder as decoder_module

    monkeypatch.setattr(decoder_module, "_compiled_static_step", lambda: decoder_module._static_step)
    dec = make_decoder(seed=26)
    c = make_context(seed=27)
    kw = dict(strategy=strategy, num_beams=3, no_repeat_ngram_size=3)
    a = dec.generate(c, 14, generator=torch.Generator().manual_seed(5), **kw)
    b = dec.generate(c, 14, generator=torch.Generator().manual_seed(5), compile_step=True, **kw)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="use_cache"):
        dec.generate(c, 4, compile_step=True, use_cache=False)


def test_step_weights_are_reused_until_a_parameter_changes(make_context, make_decoder):
    """generate() prepares the step's stacked/transposed weights once and reuses them while
    the parameters are unchanged; an in-place change (optimizer step, load_state_dict)
    rebuilds them, so the tokens always follow the current weights."""
    dec, other = make_decoder(seed=45, eos_id=None), make_decoder(seed=46, eos_id=None)
    c = make_context(seed=47)
    first = dec.generate(c, 6)

    def prepared() -> torch.Tensor:
        with torch.no_grad():  # as in generate()
            return dec._step_weights()[0][0]["qkv"][0]

    kept = prepared()
    assert prepared() is kept
    assert torch.equal(dec.generate(c, 6), first) and prepared() is kept
    dec.load_state_dict(other.state_dict())  # in-place copy: same storage, new version
    assert prepared() is not kept
    assert torch.equal(dec.generate(c, 6), other.generate(c, 6))
    with torch.no_grad():
        dec.blocks[0].ff.net[0].weight.mul_(3.0)  # what an optimizer step does
    fresh = make_decoder(seed=46, eos_id=None)
    fresh.load_state_dict(dec.state_dict())
    assert torch.equal(dec.generate(c, 6), fresh.generate(c, 6))
    with torch.enable_grad():  # under autograd: rebuilt every call, so gradients reach the parameters
        assert dec._step_weights()[0][0]["qkv"][0].requires_grad
    with torch.inference_mode():  # kept from inside inference_mode: still usable outside it
        tokens = dec.generate(c, 6)
    assert not prepared().is_inference() and torch.equal(dec.generate(c, 6), tokens)


def test_attend_equals_sdpa_with_and_without_an_additive_mask():
    """The explicit-product attention of the decode step computes SDPA's function."""
    import torch.nn.functional as F

    from mmctx.heads.decoder import _attend

    g = torch.Generator().manual_seed(40)
    q, k, v = (torch.randn(3, 2, t, 8, generator=g, dtype=torch.float64) for t in (1, 6, 6))
    bias = torch.zeros(3, 1, 1, 6, dtype=torch.float64)
    bias[0, ..., 4:] = float("-inf")  # a padded row
    bias[2, ..., :1] = float("-inf")
    for b in (None, bias):
        torch.testing.assert_close(_attend(q, k, v, b), F.scaled_dot_product_attention(q, k, v, attn_mask=b),
                                   atol=1e-12, rtol=0)


def rig_logits(dec: TextDecoder, eos_rows: int, eos_from: int) -> None:
    """Make PAD and BOS the largest logits everywhere (they must still never be picked) and
    EOS the choice of the first ``eos_rows`` rows from call ``eos_from`` on, never before."""
    calls = []

    def hook(module, inputs, logits):  # (N, t, V)
        logits = logits.clone()
        logits[..., PAD] = logits[..., BOS] = 1e4
        logits[..., EOS] = -1e4
        if len(calls) >= eos_from:
            logits[:eos_rows, ..., EOS] = 1e3
        calls.append(1)
        return logits

    dec.lm_head.register_forward_hook(hook)


@pytest.mark.parametrize("eos_id", [EOS, None])
def test_greedy_through_the_static_step_picks_tokens_in_the_graph_as_greedy_search(
    eos_id, make_context, make_decoder, monkeypatch
):
    """generate(compile_step=True, strategy="greedy") takes the arg-max inside the step's
    graph (run eagerly here; compiled below, slow): the tokens of greedy_search over the
    dynamic cache — banned BOS/PAD never picked, EOS then PAD, exact length without EOS,
    early stop when every row has ended — while penalties and n-gram bans still go through
    greedy_search."""
    import mmctx.heads.decoder as decoder_module

    monkeypatch.setattr(decoder_module, "_compiled_static_greedy", lambda: decoder_module._static_greedy)
    monkeypatch.setattr(decoder_module, "_compiled_static_step", lambda: decoder_module._static_step)
    c = make_context(lengths=(5, 0, 7), seed=41)
    for eos_rows, eos_from in ((2, 3), (3, 2)):
        outs = []
        for compile_step in (False, True):
            dec = make_decoder(seed=42, tie_embeddings=False, eos_id=eos_id)
            rig_logits(dec, eos_rows, eos_from)
            outs.append(dec.generate(c, 12, compile_step=compile_step))
        assert torch.equal(outs[1], outs[0])
        out = outs[1]
        assert not (out == BOS).any()
        if eos_id is None:
            assert out.shape == (3, 12) and not (out == PAD).any()
        else:
            assert (out[:eos_rows, eos_from] == EOS).all() and (out[:eos_rows, eos_from + 1 :] == PAD).all()
            assert out.shape == ((3, 12) if eos_rows < 3 else (3, eos_from + 1))  # all ended: stop
    dec = make_decoder(seed=44)
    for kw in ({"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}):
        assert torch.equal(dec.generate(c, 10, compile_step=True, **kw), dec.generate(c, 10, **kw)), kw


@pytest.mark.slow
def test_compiled_static_step_generates_the_same_tokens_and_compiles_once(make_context, make_decoder):
    """torch.compile of the static step (fullgraph: no break): greedy tokens equal the eager
    decoder's, and a second call with the same shapes compiles nothing new."""
    torch._dynamo.reset()
    dec = make_decoder(seed=28)
    c = make_context(lengths=(5, 0, 7), seed=29)
    eager = dec.generate(c, 12)
    compiled = dec.generate(c, 12, compile_step=True)
    assert torch.equal(compiled, eager)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames >= 1
    assert torch.equal(dec.generate(c, 12, compile_step=True), eager)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    # a call with other shapes (batch, length) compiles its own graph and matches eager,
    # and the first graph still serves its own shapes afterwards
    two = ExtendedContext(c.x[:2, :5], c.mask[:2, :5], c.modality[:2, :5], c.names)
    assert torch.equal(dec.generate(two, 7, compile_step=True), dec.generate(two, 7))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > frames
    assert torch.equal(dec.generate(c, 12, compile_step=True), eager)  # the first graph again


def test_length_scaled_cross_attention_keeps_the_cache_and_padding_exact(make_context, make_decoder):
    dec = make_decoder(length_scale_ref=16)
    c, noisy = make_context((5, 3, 7)), with_noisy_padding(make_context((5, 3, 7)))
    tokens = random_tokens(3, 6)
    full = dec(tokens, c)
    assert torch.allclose(full, dec(tokens, noisy), atol=1e-6)
    cache = dec.init_cache(c)
    steps = torch.cat([dec.step(tokens[:, i : i + 1], cache) for i in range(6)], 1)
    assert torch.allclose(steps, full, atol=1e-5)
    assert torch.equal(dec.generate(c, 10), dec.generate(c, 10, use_cache=False))
    # a row's logits are those of the same row alone, its padding cut off (the factor counts real tokens)
    alone = ExtendedContext(c.x[1:2, :3], c.mask[1:2, :3], c.modality[1:2, :3], c.names)
    assert torch.allclose(dec(tokens[1:2], alone), full[1:2], atol=1e-5)
    # the factor is log(M) / log(ref): 1 at the reference length, larger beyond
    from mmctx.heads.decoder import length_scale

    assert torch.allclose(length_scale(torch.tensor([16, 256, 4, 0]), 16), torch.tensor([1.0, 2.0, 1.0, 1.0]))
    # up to ref tokens the decoder is the unscaled one with the same weights, beyond it is not
    plain = make_decoder()
    assert torch.equal(dec(tokens, c), plain(tokens, c))
    longer = make_context((40, 40), seed=5)
    assert not torch.allclose(dec(tokens[:2], longer), plain(tokens[:2], longer), atol=1e-3)
    with pytest.raises(ValueError, match="length_scale_ref"):
        make_decoder(length_scale_ref=1)


def test_length_scaling_holds_one_standing_out_token_as_distractors_are_added():
    """A logit that beats N distractors by Δ gets e^Δ / (e^Δ + N) of a softmax, which vanishes
    as N grows; times log(N) / log(ref) (N > ref) it gets N^(Δ/log ref) / (N^(Δ/log ref) + N),
    which grows with N once Δ > log(ref) (here Δ = 6, ref = 64: Δ / log(ref) = 1.44)."""
    from mmctx.heads.decoder import length_scale

    plain, scaled = [], []
    for n in (64, 4096, 65536):
        logits = torch.zeros(n + 1, dtype=torch.float64)
        logits[0] = 6.0
        plain.append(logits.softmax(-1)[0].item())
        factor = length_scale(torch.tensor([n + 1]), 64).double()
        scaled.append((logits * factor).softmax(-1)[0].item())
    assert plain[0] > 0.85 and plain[2] < 0.01  # the plain softmax loses the needle at 64K
    assert scaled[0] > 0.85 and scaled[0] < scaled[1] < scaled[2]  # the scaled one holds it better the longer
