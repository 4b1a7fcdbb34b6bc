"""Recurrent memory across segments (RMT)."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import RecurrentMemoryEncoder
from mmctx.types import ExtendedContext, Tokens


def build(segment_len: int = 8, bptt: int = 1, append_memory: bool = False) -> RecurrentMemoryEncoder:
    torch.manual_seed(0)
    return RecurrentMemoryEncoder(16, num_layers=2, num_heads=2, segment_len=segment_len, num_memory=3,
                                  bptt_segments=bptt, append_memory=append_memory)


def context(N: int = 32, B: int = 2, seed: int = 0) -> ExtendedContext:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, N - 5 :] = False
    return ExtendedContext(torch.randn(B, N, 16, generator=g), mask, torch.zeros(B, N, dtype=torch.long), ("text",))


def test_one_segment_equals_the_plain_encoder_over_memory_and_context():
    model = build(segment_len=64).eval()
    ctx = context(N=20)
    out, memory = model.encode(ctx)
    m0 = model.memory.expand(2, 3, 16)
    plain = model.encoder(torch.cat([m0, ctx.x], 1), torch.cat([torch.ones(2, 3, dtype=torch.bool), ctx.mask], 1))
    assert torch.equal(out.x, plain[:, 3:])
    assert torch.equal(memory, plain[:, :3])
    assert torch.equal(out.mask, ctx.mask) and out.names == ctx.names


def test_memory_carries_the_first_segment_to_the_last():
    model = build(segment_len=8).eval()
    ctx = context(N=32)  # 4 segments
    x2 = ctx.x.clone()
    x2[:, :8] = torch.randn(2, 8, 16)  # change only segment 0
    other = ExtendedContext(x2, ctx.mask, ctx.modality, ctx.names)
    a, mem_a = model.encode(ctx)
    b, mem_b = model.encode(other)
    assert (a.x[:, 24:] - b.x[:, 24:]).abs().amax() > 1e-3  # the last segment's outputs changed
    assert (mem_a - mem_b).abs().amax() > 1e-3


@pytest.mark.parametrize("bptt,reached", [(1, [False, False, False, True]), (2, [False, False, True, True]), (4, [True] * 4)])
def test_gradients_stop_after_bptt_segments(bptt, reached):
    model = build(segment_len=8, bptt=bptt)
    x = torch.randn(1, 32, 16, requires_grad=True)
    out, _ = model.encode(Tokens(x, torch.ones(1, 32, dtype=torch.bool)))
    out.x[:, 24:].pow(2).sum().backward()  # a loss on the last segment only
    per_segment = x.grad.abs().view(4, 8, 16).sum(dim=(1, 2))
    assert [bool(g > 0) for g in per_segment] == reached


def test_streaming_in_two_calls_equals_one_call():
    model = build(segment_len=8).eval()
    ctx = Tokens(context(N=32).x, torch.ones(2, 32, dtype=torch.bool))
    whole, mem = model.encode(ctx)
    first, mem1 = model.encode(Tokens(ctx.x[:, :16], ctx.mask[:, :16]))
    second, mem2 = model.encode(Tokens(ctx.x[:, 16:], ctx.mask[:, 16:]), memory=mem1)
    torch.testing.assert_close(torch.cat([first.x, second.x], 1), whole.x)
    torch.testing.assert_close(mem2, mem)


def test_trailing_padding_changes_nothing_and_gradients_reach_every_parameter():
    model = build(segment_len=8, bptt=4)
    ctx = context(N=27)  # sample 1 has 22 real tokens; the last segment is partial
    out, mem = model.encode(ctx)
    longer = ExtendedContext(
        torch.cat([ctx.x, torch.randn(2, 13, 16)], 1), torch.cat([ctx.mask, torch.zeros(2, 13, dtype=torch.bool)], 1),
        torch.zeros(2, 40, dtype=torch.long), ctx.names,
    )
    out2, mem2 = model.encode(longer)
    torch.testing.assert_close(out2.x[:, :27][ctx.mask], out.x[ctx.mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(mem2, mem, atol=1e-5, rtol=0)
    (out.x[ctx.mask].pow(2).sum() + mem.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forward_returns_the_context_and_can_append_the_memory():
    ctx = context(N=20)
    out = build().eval()(ctx)
    assert isinstance(out, ExtendedContext) and out.x.shape == (2, 20, 16)
    out = build(append_memory=True).eval()(ctx)
    assert out.x.shape == (2, 23, 16) and out.mask[:, 20:].all()
    assert out.names == ("text", "memory") and (out.modality[:, 20:] == 1).all()
    tok = build(append_memory=True).eval()(Tokens(ctx.x, ctx.mask))
    assert isinstance(tok, Tokens) and tok.x.shape == (2, 23, 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bptt_segments"):
        RecurrentMemoryEncoder(16, bptt_segments=0)
    with pytest.raises(ValueError, match="num_memory"):
        RecurrentMemoryEncoder(16, num_memory=0)
    model = build()
    with pytest.raises(ValueError, match="context.x"):
        model(Tokens(torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)))
    with pytest.raises(ValueError, match="memory"):
        model.encode(context(), memory=torch.randn(2, 4, 16))
