"""ContextEncoder over the fused context: full attention, and with a window (O(N·w)) plus
learned global tokens."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import ContextEncoder
from mmctx.types import ExtendedContext, Tokens


def make_context(N: int = 30, B: int = 3, D: int = 16, seed: int = 0) -> ExtendedContext:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    if B >= 3:
        mask[1, 10:14] = False  # one modality's padding in the middle of a fused context
        mask[2, N - 7 :] = False
    modality = (torch.arange(N) >= N // 2).long().expand(B, N)
    return ExtendedContext(torch.randn(B, N, D, generator=g), mask, modality, ("text", "audio"))


@pytest.mark.parametrize("num_global_tokens", [0, 2])
def test_wide_window_equals_full_attention(num_global_tokens):
    torch.manual_seed(0)
    full = ContextEncoder(16, num_layers=2, num_heads=4, num_global_tokens=num_global_tokens).eval()
    local = ContextEncoder(16, num_layers=2, num_heads=4, window=64, num_global_tokens=num_global_tokens).eval()
    assert local.state_dict().keys() == full.state_dict().keys()
    local.load_state_dict(full.state_dict())
    ctx = make_context()
    out, ref = local(ctx), full(ctx)
    torch.testing.assert_close(out.x, ref.x, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.mask, ctx.mask) and torch.equal(out.modality, ctx.modality) and out.names == ctx.names


@pytest.mark.parametrize("window", [None, 4], ids=["full", "window4"])
def test_global_tokens_shapes_gradients_and_padding_invariance(window):
    torch.manual_seed(0)
    enc = ContextEncoder(16, num_layers=2, num_heads=2, window=window, num_global_tokens=2)
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
    enc = ContextEncoder(16, num_layers=2, num_heads=2, window=3, num_global_tokens=num_global).eval()
    ctx = make_context(N=40, B=1)
    x2 = ctx.x.clone()
    x2[0, 20] += torch.randn(16)
    moved = ExtendedContext(x2, ctx.mask, ctx.modality, ctx.names)
    changed = (enc(ctx).x - enc(moved).x).abs().amax(-1)[0] > 1e-6
    if num_global == 0:
        assert changed.nonzero().squeeze(1).tolist() == list(range(14, 27))  # 20 ± 2·3 after two layers
    else:
        assert changed.all()  # layer 1: the global token reads token 20; layer 2: every token reads it


def test_full_attention_reads_everything_and_takes_one_modality_tokens():
    torch.manual_seed(0)
    enc = ContextEncoder(16, num_layers=1, num_heads=2).eval()
    ctx = make_context(N=40, B=1)
    x2 = ctx.x.clone()
    x2[0, 20] += torch.randn(16)
    changed = (enc(ctx).x - enc(ExtendedContext(x2, ctx.mask, ctx.modality, ctx.names)).x).abs().amax(-1)[0] > 1e-6
    assert changed.all()
    tokens = enc(Tokens(ctx.x, ctx.mask))
    assert isinstance(tokens, Tokens)
    torch.testing.assert_close(tokens.x, enc(ctx).x)


def test_bad_inputs():
    enc = ContextEncoder(16, window=4)
    with pytest.raises(ValueError, match="context.x"):
        enc(make_context(D=8))
    with pytest.raises(ValueError, match="num_global_tokens"):
        ContextEncoder(16, num_global_tokens=-1)
    with pytest.raises(TypeError, match="ExtendedContext or Tokens"):
        enc(make_context().x)
    with pytest.raises(ValueError, match="window must be >= 1"):
        ContextEncoder(16, window=0)
