"""The sliding-window context encoder: ContextEncoder's interface at O(N·w)."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import ContextEncoder, SlidingWindowContextEncoder
from mmctx.types import ExtendedContext


def make_context(N: int = 30, B: int = 3, D: int = 16, seed: int = 0) -> ExtendedContext:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    if B >= 3:
        mask[1, 10:14] = False  # one modality's padding in the middle of a fused context
        mask[2, N - 7 :] = False
    modality = (torch.arange(N) >= N // 2).long().expand(B, N)
    return ExtendedContext(torch.randn(B, N, D, generator=g), mask, modality, ("text", "audio"))


def test_wide_window_without_global_tokens_equals_context_encoder():
    torch.manual_seed(0)
    full = ContextEncoder(16, num_layers=2, num_heads=4).eval()
    local = SlidingWindowContextEncoder(16, num_layers=2, num_heads=4, window=64).eval()
    local.load_state_dict(full.state_dict())
    ctx = make_context()
    out, ref = local(ctx), full(ctx)
    torch.testing.assert_close(out.x, ref.x, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.mask, ctx.mask) and torch.equal(out.modality, ctx.modality) and out.names == ctx.names


def test_global_tokens_shapes_gradients_and_padding_invariance():
    torch.manual_seed(0)
    enc = SlidingWindowContextEncoder(16, num_layers=2, num_heads=2, window=4, num_global_tokens=2)
    ctx = make_context()
    out = enc(ctx)
    assert out.x.shape == ctx.x.shape and torch.isfinite(out.x).all()
    (out.x[out.mask] ** 2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    noisy = ExtendedContext(ctx.x.masked_fill(~ctx.mask[..., None], 1e3), ctx.mask, ctx.modality, ctx.names)
    with torch.no_grad():
        torch.testing.assert_close(enc(noisy).x[ctx.mask], enc(ctx).x[ctx.mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_global", [0, 1])
def test_information_travels_a_window_per_layer_or_anywhere_through_global_tokens(num_global):
    torch.manual_seed(0)
    enc = SlidingWindowContextEncoder(16, num_layers=2, num_heads=2, window=3, num_global_tokens=num_global).eval()
    ctx = make_context(N=40, B=1)
    x2 = ctx.x.clone()
    x2[0, 20] += torch.randn(16)
    moved = ExtendedContext(x2, ctx.mask, ctx.modality, ctx.names)
    changed = (enc(ctx).x - enc(moved).x).abs().amax(-1)[0] > 1e-6
    if num_global == 0:
        assert changed.nonzero().squeeze(1).tolist() == list(range(14, 27))  # 20 ± 2·3 after two layers
    else:
        assert changed.all()  # layer 1: the global token reads token 20; layer 2: every token reads it


def test_bad_inputs():
    enc = SlidingWindowContextEncoder(16, window=4)
    with pytest.raises(ValueError, match="context.x"):
        enc(make_context(D=8))
    with pytest.raises(ValueError, match="num_global_tokens"):
        SlidingWindowContextEncoder(16, num_global_tokens=-1)
