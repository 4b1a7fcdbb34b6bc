"""The KV-cache hooks the decoder adds to MultiHeadAttention: precomputed ``kv`` and ``query_offset``."""

from __future__ import annotations

import pytest
import torch

from mmctx.layers import MultiHeadAttention, attention_mask


pytestmark = pytest.mark.usefixtures("one_thread")


def test_precomputed_cross_kv_equals_context():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, context_dim=8).eval()
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    key_mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5]).bool()
    kv = mha.project_kv(ctx)
    assert kv[0].shape == kv[1].shape == (2, 4, 5, 4)
    torch.testing.assert_close(mha(x, kv=kv, key_mask=key_mask), mha(x, ctx, key_mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("split", [1, 3, 5])
def test_short_query_against_long_cache_keeps_causal_alignment(split):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, rope=True).eval()
    x = torch.randn(2, 6, 16)
    full = mha(x, is_causal=True)  # fused causal kernel, positions 0..5
    k, v = mha.project_kv(x, torch.arange(6))  # the whole cache
    tail = x[:, split:]  # the new queries at absolute positions split..5
    out = mha(tail, kv=(k, v), is_causal=True, query_offset=split)
    torch.testing.assert_close(out, full[:, split:], atol=1e-5, rtol=0)
    # the first new query must not see the later keys (SDPA's own is_causal would allow it)
    wrong = torch.nn.functional.scaled_dot_product_attention(
        mha.rope(mha.q_proj(tail).view(2, -1, 4, 4).transpose(1, 2), torch.arange(split, 6)), k, v, is_causal=True
    )
    assert not torch.allclose(mha.out_proj(wrong.transpose(1, 2).reshape(2, -1, 16)), full[:, split:], atol=1e-3)


def test_kv_and_context_are_exclusive_and_checked():
    mha = MultiHeadAttention(16, 4)
    x = torch.randn(2, 3, 16)
    kv = mha.project_kv(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="either context or kv"):
        mha(x, torch.randn(2, 5, 16), kv=kv)
    with pytest.raises(ValueError, match=r"kv\[0\]"):
        mha(x, kv=(kv[0][:, :2], kv[1]))
    with pytest.raises(ValueError, match="key_mask"):
        mha(x, kv=kv, key_mask=torch.ones(2, 4, dtype=torch.bool))


def test_attention_mask_offset_and_device():
    mask, empty = attention_mask(None, 2, is_causal=True, query_offset=2, num_keys=4, device=torch.device("cpu"))
    assert mask[0, 0].tolist() == [[True, True, True, False], [True, True, True, True]]
    assert empty is None and mask.device.type == "cpu"
