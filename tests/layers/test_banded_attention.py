"""Windowed (banded) attention: MultiHeadAttention / TransformerEncoder with ``window=w``
equal full attention with the equivalent banded mask, and full attention itself when the
band covers the sequence."""

from __future__ import annotations

import math
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmctx.layers import MultiHeadAttention, TransformerEncoder, sliding_window_mask


def windowed(dim: int, num_heads: int, window: int, num_global: int = 0, **kw) -> MultiHeadAttention:
    """Windowed self-attention with RoPE, as the sliding-window context encoder builds it."""
    return MultiHeadAttention(dim, num_heads, rope=True, window=window, num_global=num_global, **kw)


def reference(attn: MultiHeadAttention, x, key_mask, positions=None):
    """Dense attention written out with an explicit softmax and the (N, N) band mask."""
    B, N, D = x.shape
    H, Dh = attn.num_heads, attn.head_dim
    q = attn.q_proj(x).view(B, N, H, Dh).transpose(1, 2)
    k, v = attn.kv_proj(x).view(B, N, 2, H, Dh).permute(2, 0, 3, 1, 4)
    pos = torch.arange(N) if positions is None else positions
    q, k = attn.rope(q, pos), attn.rope(k, pos)
    allowed = sliding_window_mask(N, attn.window, attn.num_global)[None, None] & key_mask[:, None, None, :]
    scores = (q @ k.transpose(-1, -2) / math.sqrt(Dh)).masked_fill(~allowed, float("-inf"))
    probs = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # rows with no key → zeros
    out = (probs @ v).transpose(1, 2).reshape(B, N, D)
    return attn.out_proj(out)


def padded_mask(N: int) -> torch.Tensor:
    """Four samples: full, tail padding, holes in the middle, all padding."""
    mask = torch.ones(4, N, dtype=torch.bool)
    mask[1, N - N // 3 :] = False
    mask[2, N // 4 : N // 2] = False
    mask[3] = False
    return mask


@pytest.mark.parametrize(
    "N,window,num_global",
    [
        (37, 5, 0),  # N not a multiple of the block, several block boundaries
        (37, 5, 3),  # with global tokens
        (40, 8, 2),  # N - G a multiple of the block
        (23, 1, 1),  # narrowest band
        (12, 20, 2),  # window wider than the sequence: full attention
        (9, 3, 9),  # every position global
    ],
)
def test_equals_dense_attention_with_band_mask(N, window, num_global):
    torch.manual_seed(0)
    attn = windowed(16, 4, window, num_global).eval()
    x = torch.randn(4, N, 16)
    mask = padded_mask(N)
    out = attn(x, key_mask=mask)
    ref = reference(attn, x, mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()
    assert torch.equal(out[3], attn.out_proj.bias.expand(N, 16))  # no key: zero attention, then out_proj


def test_padding_rows_without_keys_in_their_band_are_zero_not_nan():
    torch.manual_seed(0)
    attn = windowed(8, 2, window=2, bias=False).eval()
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, :3] = True  # queries 6.. see no real key within ±2
    out = attn(torch.randn(1, 20, 8), key_mask=mask)
    assert torch.isfinite(out).all()
    assert (out[0, 6:] == 0).all() and (out[0, :5] != 0).any()


def test_batch_positions_and_gradients_match_reference():
    torch.manual_seed(0)
    attn = windowed(16, 2, window=4, num_global=2)
    x = torch.randn(2, 19, 16, requires_grad=True)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[1, 15:] = False
    positions = torch.stack([torch.arange(19), torch.arange(19) + 100])  # (B, N) RoPE positions
    out = attn(x, key_mask=mask, positions=positions)
    ref = reference(attn, x, mask, positions)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weights = torch.randn(out.shape)
    (grad_out,) = torch.autograd.grad((out * weights).sum(), x, retain_graph=True)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    torch.testing.assert_close(grad_out, grad_ref, atol=1e-5, rtol=1e-5)
    (out * weights).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_in_training_keeps_outputs_finite():
    torch.manual_seed(0)
    attn = windowed(16, 2, window=3, num_global=1, dropout=0.5).train()
    out = attn(torch.randn(2, 17, 16), key_mask=padded_mask(17)[:2])
    assert torch.isfinite(out).all()


def test_never_builds_an_n_by_n_mask(monkeypatch):
    """Every SDPA call of the blocked backend sees at most 3·window + G keys per query block."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((tuple(q.shape), tuple(k.shape), None if attn_mask is None else tuple(attn_mask.shape)))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    N, w, G = 2048, 16, 2
    attn = windowed(16, 2, window=w, num_global=G).eval()
    attn(torch.randn(1, N, 16), key_mask=torch.ones(1, N, dtype=torch.bool))
    global_call, local_call = seen
    assert global_call[0][2] == G  # G global queries × N keys
    assert local_call[0][2] == w and local_call[1][2] == 3 * w + G  # (B·N/w, H, w, 3w+G)
    assert math.prod(local_call[2]) == (N - G + w - 1) // w * w * (3 * w + G)  # O(N·w) mask


@pytest.mark.parametrize("rope", [False, True])
def test_attention_with_wide_window_equals_full_attention(rope):
    torch.manual_seed(0)
    full = MultiHeadAttention(16, 4, rope=rope).eval()
    local = MultiHeadAttention(16, 4, rope=rope, window=20).eval()
    local.load_state_dict(full.state_dict())  # same parameter names with and without a window
    x = torch.randn(4, 21, 16)
    mask = padded_mask(21)
    positions = torch.arange(21) + 7
    torch.testing.assert_close(local(x, key_mask=mask, positions=positions), full(x, key_mask=mask, positions=positions),
                               atol=1e-5, rtol=1e-5)


def test_encoder_with_wide_window_equals_full_attention_encoder():
    torch.manual_seed(0)
    full = TransformerEncoder(16, 2, 4).eval()
    local = TransformerEncoder(16, 2, 4, window=64).eval()
    assert local.state_dict().keys() == full.state_dict().keys()
    local.load_state_dict(full.state_dict())  # same parameter names with and without a window
    x = torch.randn(3, 21, 16)
    mask = padded_mask(21)[:3]
    torch.testing.assert_close(local(x, mask), full(x, mask), atol=1e-5, rtol=1e-5)
    # a narrow window is a different function
    narrow = TransformerEncoder(16, 2, 4, window=2).eval()
    narrow.load_state_dict(full.state_dict())
    assert not torch.allclose(narrow(x, mask)[mask], full(x, mask)[mask], atol=1e-3)


def test_one_layer_receptive_field_is_the_window():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 1, 2, window=3).eval()
    x = torch.randn(1, 30, 16)
    y = x.clone()
    y[0, 15] += torch.randn(16)  # (a constant shift would vanish in LayerNorm)
    changed = (enc(x) - enc(y)).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().squeeze(1).tolist() == list(range(12, 19))  # 15 ± 3


def test_bad_arguments_name_the_culprit():
    with pytest.raises(ValueError, match="window must be >= 1"):
        windowed(16, 2, window=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        windowed(16, 2, window=4, backend="dense")
    with pytest.raises(ValueError, match="not divisible"):
        windowed(10, 4, window=4)
    with pytest.raises(ValueError, match="flex"):
        windowed(16, 2, window=4, dropout=0.1, backend="flex")
    with pytest.raises(ValueError, match="apply to windowed attention"):
        MultiHeadAttention(16, 2, num_global=2)
    with pytest.raises(ValueError, match="apply to windowed attention"):
        MultiHeadAttention(16, 2, backend="flex")
    with pytest.raises(ValueError, match="attends its own input"):
        MultiHeadAttention(16, 2, context_dim=8, window=4)
    attn = windowed(16, 2, window=4)
    with pytest.raises(ValueError, match="MultiHeadAttention x"):
        attn(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match="MultiHeadAttention key_mask"):
        attn(torch.randn(2, 5, 16), key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="self-attention only"):
        attn(torch.randn(2, 5, 16), context=torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="self-attention only"):
        attn(torch.randn(2, 5, 16), is_causal=True)
    with pytest.raises(ValueError, match="positions"):
        attn(torch.randn(2, 5, 16), positions=torch.arange(4))


@pytest.mark.slow
def test_flex_backend_matches_blocked_backend():
    """Compiled flex_attention (inference on CPU; ~15-30 s to compile) computes the same band."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(0)
    blocked = windowed(32, 2, window=40, num_global=3).eval()
    flex = windowed(32, 2, window=40, num_global=3, backend="flex").eval()
    flex.load_state_dict(blocked.state_dict())
    N = 300  # not a multiple of flex's 128-token tiles
    x = torch.randn(2, N, 32)
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[1, 200:] = False
    start = time.perf_counter()
    try:
        with torch.no_grad():
            out = flex(x, key_mask=mask)
    except Exception as err:  # pragma: no cover - depends on the compiler toolchain
        pytest.skip(f"torch.compile(flex_attention) does not work here: {err}")
    with torch.no_grad():
        ref = blocked(x, key_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert time.perf_counter() - start < 300
    # on CPU a call that needs gradients falls back to the blocked backend (no flex backward)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out_grad = flex(x, key_mask=mask)
    out_grad.sum().backward()
    torch.testing.assert_close(out_grad.detach(), ref, atol=1e-5, rtol=1e-5)


def _dense_banded(q, k, v, key_mask, window, num_global):
    """The band + global pattern with an explicit softmax over (N, N) scores."""
    N = q.shape[2]
    allowed = sliding_window_mask(N, window, num_global)[None, None] & key_mask[:, None, None, :]
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
    return torch.nan_to_num(scores.softmax(-1), nan=0.0) @ v


@pytest.mark.parametrize("block_size", [None, 2, 4, 8, 16])
@pytest.mark.parametrize("N,num_global,batch", [(53, 0, 1), (53, 3, 1), (64, 0, 1), (45, 2, 4)])
def test_block_sizes_equal_dense_attention_values_and_gradients(block_size, N, num_global, batch):
    """Every query-block length (which must divide 2·window) gives the dense result, forward
    and backward — the key windows are strided views with a hand-written backward."""
    from mmctx.layers.banded_attention import banded_attention

    torch.manual_seed(0)
    window = 8
    q, k, v = (torch.randn(batch, 2, N, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    key_mask = padded_mask(N)[:batch] if batch == 4 else torch.ones(1, N, dtype=torch.bool)
    grad = torch.randn(batch, 2, N, 8, dtype=torch.float64)
    out = banded_attention(q, k, v, None if N == 64 else key_mask, window, num_global, block_size=block_size)
    ref = _dense_banded(q, k, v, key_mask, window, num_global)
    assert torch.allclose(out, ref, atol=1e-10)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for g, r in zip(got, want):
        assert torch.allclose(g, r, atol=1e-10)


def test_block_size_must_divide_twice_the_window():
    from mmctx.layers.banded_attention import banded_attention

    q = torch.randn(1, 1, 40, 4)
    with pytest.raises(ValueError, match="block_size=3 must divide"):
        banded_attention(q, q, q, None, 8, block_size=3)


def test_padded_tail_of_the_last_block_never_puts_nan_in_gradients():
    """Every real row has a key but the padded rows after the last block's end do not: the
    guard must cover them too, or the keys' gradients turn NaN."""
    from mmctx.layers.banded_attention import banded_attention

    torch.manual_seed(0)
    N, window = 53, 8  # block 16 → 64 rows, 11 padded
    key_mask = (torch.arange(N) < N - window)[None]  # row N-1 still sees key N-1-window
    q, k, v = (torch.randn(1, 2, N, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = banded_attention(q, k, v, key_mask, window, block_size=16)
    ref = _dense_banded(q, k, v, key_mask, window, 0)
    assert torch.allclose(out, ref, atol=1e-10)
    for g, r in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(ref.sum(), (q, k, v))):
        assert torch.isfinite(g).all() and torch.allclose(g, r, atol=1e-10)
