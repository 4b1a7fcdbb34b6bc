from __future__ import annotations

import math

import pytest
import torch

from mmctx.layers import MultiHeadAttention, RotaryEmbedding, TransformerEncoder, attention_mask, masked_mean, sincos_2d


def reference_attention(mha: MultiHeadAttention, x, context, key_mask, causal=False):
    """Attention written out with explicit softmax, as the ground truth for SDPA."""
    B, N, D = x.shape
    src = x if context is None else context
    M = src.shape[1]
    H, Dh = mha.num_heads, mha.head_dim
    q = mha.q_proj(x).view(B, N, H, Dh).transpose(1, 2)
    k, v = mha.kv_proj(src).view(B, M, 2, H, Dh).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    allowed = key_mask[:, None, None, :].expand(B, 1, N, M).clone()
    if causal:
        allowed &= torch.ones(N, M, dtype=torch.bool).tril()
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v
    return mha.out_proj(out.transpose(1, 2).reshape(B, N, D))


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_attention_matches_explicit_softmax(causal):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    key_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2]).bool()
    out = mha(x, key_mask=key_mask, is_causal=causal)
    ref = reference_attention(mha, x, None, key_mask, causal)
    assert torch.allclose(out, ref, atol=1e-5)


def test_cross_attention_with_context_width():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, context_dim=8).eval()
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    key_mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5]).bool()
    assert torch.allclose(mha(x, ctx, key_mask), reference_attention(mha, x, ctx, key_mask), atol=1e-5)


def test_query_with_no_key_gives_zero_attention_not_nan():
    mha = MultiHeadAttention(8, 2, bias=False)
    out = mha(torch.randn(2, 3, 8), torch.randn(2, 4, 8), key_mask=torch.tensor([[0] * 4, [1] * 4]).bool())
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(3, 8))


def test_attention_mask_combines_padding_and_causality():
    mask, empty = attention_mask(torch.tensor([[1, 1, 0]]).bool(), 3, is_causal=True)
    assert mask[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert empty is None


def test_key_padding_mask_is_one_row_broadcast_not_n_by_m():
    # key padding alone is the same for every query: the mask stays (B, 1, 1, M), so SDPA's
    # bool -> float conversion costs M, not N·M, per sample (full attention at 64K tokens)
    key_mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]]).bool()
    mask, empty = attention_mask(key_mask, 3)
    assert mask.shape == (2, 1, 1, 4) and empty.shape == (2, 1, 1, 1)
    assert mask[0, 0, 0].tolist() == [True, True, True, False]
    assert empty[:, 0, 0, 0].tolist() == [False, True]
    # with a query-dependent part the mask is per query row
    assert attention_mask(key_mask, 3, attn_mask=torch.ones(3, 4, dtype=torch.bool))[0].shape == (2, 1, 3, 4)
    # and attention through it equals the explicit softmax; the sample with no key gives zeros
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, bias=False).eval()  # no bias: the empty sample's output is exactly 0
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    out = mha(x, ctx, key_mask)
    assert torch.allclose(out[0], reference_attention(mha, x, ctx, key_mask)[0], atol=1e-5)
    assert torch.equal(out[1], torch.zeros(3, 8))


def test_wrong_shapes_name_the_argument():
    mha = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match="MultiHeadAttention x"):
        mha(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match="key_mask"):
        mha(torch.randn(2, 5, 16), key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 4)


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        return (rope(q, torch.tensor([i])) * rope(k, torch.tensor([j]))).sum()

    assert torch.allclose(score(3, 1), score(10, 8), atol=1e-5)
    assert torch.allclose(score(0, 0), (q * k).sum(), atol=1e-6)
    assert not torch.allclose(score(3, 1), score(1, 3), atol=1e-3)


def test_encoder_padding_invariance_and_gradients():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 2, 4)
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5]).bool()
    out = enc(x, mask)
    x2 = x.clone()
    x2[0, 3:] = 100.0
    assert torch.allclose(out[0, :3], enc(x2, mask)[0, :3], atol=1e-5)
    out[mask].sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_masked_mean_and_positions():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [5.0], [5.0]]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
    assert masked_mean(x, m).tolist() == [[2.0], [0.0]]
    pos = sincos_2d(3, 4, 8)
    assert pos.shape == (12, 8) and len({tuple(r) for r in pos.tolist()}) == 12


def test_rope_seq_dim_layout_matches_the_default_layout():
    """(B, N, 2, H, D/H) with seq_dim=1 (the windowed path's fused q/k) rotates like (B, H, N, D/H)."""
    torch.manual_seed(0)
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 3, 5, 8)  # (B, H, N, D/H)
    for pos in (torch.arange(5), torch.randint(0, 50, (2, 5))):
        fused = x.transpose(1, 2)[:, :, None].expand(2, 5, 2, 3, 8)  # (B, N, 2, H, D/H)
        out = rope(fused, pos, seq_dim=1)
        assert torch.allclose(out[:, :, 0].transpose(1, 2), rope(x, pos), atol=1e-6)
        assert torch.allclose(out[:, :, 1], out[:, :, 0])
