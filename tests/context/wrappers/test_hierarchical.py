"""Hierarchical encoding: chunks → summaries → second-level encoder."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import HierarchicalEncoder
from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder
from mmctx.layers import TransformerEncoder, lengths_to_mask

VOCAB = 40


def build(summary_tokens: int = 2, pooling: str = "attention", second: bool = True) -> HierarchicalEncoder:
    torch.manual_seed(0)
    enc = TextTransformerEncoder(VOCAB, dim=16, num_layers=1, num_heads=2, max_seq_len=16)
    second_level = TransformerEncoder(16, num_layers=1, num_heads=2) if second else None
    return HierarchicalEncoder(enc, chunk_size=8, summary_tokens=summary_tokens, second_level=second_level, pooling=pooling)


def batch(lengths=(30, 9, 0, 16), T: int = 30):
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, VOCAB, (len(lengths), T), generator=g), lengths_to_mask(torch.tensor(lengths), T)


def test_shapes_and_masks():
    model = build(summary_tokens=2).eval()
    data, mask = batch()
    out = model(data, mask)
    assert model.out_dim == 16
    assert out.x.shape == (4, 4 * 2, 16)  # ceil(30 / 8) = 4 chunks × 2 summaries
    chunk_has_input = [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    want = torch.tensor(chunk_has_input, dtype=torch.bool).repeat_interleave(2, dim=1)
    assert torch.equal(out.mask, want)
    assert torch.isfinite(out.x).all() and (out.x[~out.mask] == 0).all()


@pytest.mark.parametrize("pooling,summary_tokens", [("attention", 3), ("mean", 1), ("max", 1)])
def test_gradients_reach_every_parameter(pooling, summary_tokens):
    model = build(summary_tokens, pooling)
    data, mask = batch()
    out = model(data, mask)
    (out.x * torch.randn(out.x.shape)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_padding_never_changes_a_sample():
    model = build().eval()
    data, mask = batch()
    out = model(data, mask)
    noisy = torch.where(mask, data, torch.randint(VOCAB, 5 * VOCAB, data.shape))
    torch.testing.assert_close(model(noisy, mask).x, out.x, atol=1e-6, rtol=0)
    alone = model(data[1:2, :9], mask[1:2, :9])  # 2 chunks
    torch.testing.assert_close(alone.x[0], out.x[1, : alone.x.shape[1]], atol=1e-5, rtol=0)


def test_sliding_window_second_level_and_no_second_level():
    torch.manual_seed(0)
    enc = TextTransformerEncoder(VOCAB, dim=16, num_layers=1, num_heads=2, max_seq_len=8)
    model = HierarchicalEncoder(enc, 8, 1, TransformerEncoder(16, 1, 2, window=2)).eval()
    data, mask = batch((64, 30), 64)
    assert model(data, mask).x.shape == (2, 8, 16)
    plain = HierarchicalEncoder(enc, 8, 1, None, pooling="mean").eval()
    out = plain(data, mask)
    # no second level: each summary is its chunk's mean token
    torch.testing.assert_close(out.x[0, 0], enc(data[:1, :8], mask[:1, :8]).x[0].mean(0), atol=1e-6, rtol=0)
    # max pooling: each summary is its chunk's per-channel max over the REAL tokens only
    peak = HierarchicalEncoder(enc, 8, 1, None, pooling="max").eval()(data, mask)
    last = enc(data[1:2, 24:32], mask[1:2, 24:32])  # sample 1 has 30 tokens: its 4th chunk holds 6
    torch.testing.assert_close(peak.x[1, 3], last.x[0, :6].max(0).values, atol=1e-6, rtol=0)
    assert peak.mask[1].tolist() == [True] * 4 + [False] * 4


def test_audio_chunks_drop_a_tail_too_short_for_a_token():
    torch.manual_seed(0)
    enc = RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=8, num_layers=1, out_dim=8)
    model = HierarchicalEncoder(enc, chunk_size=3200, summary_tokens=1, num_heads=2).eval()
    lengths = torch.tensor([7000, 3200, 0])  # 7000 = 2 chunks + 600 samples (< 1360 needed for a token)
    data, mask = torch.randn(3, 7000), lengths_to_mask(lengths, 7000)
    out = model(data, mask)
    assert out.x.shape == (3, 3, 8)
    assert out.mask.tolist() == [[True, True, False], [True, False, False], [False, False, False]]


def test_bad_arguments():
    enc = TextTransformerEncoder(VOCAB, dim=16, num_layers=1, num_heads=2, max_seq_len=16)
    with pytest.raises(ValueError, match="chunk_size=32 exceeds"):
        HierarchicalEncoder(enc, 32)
    with pytest.raises(ValueError, match="pooling='mean'"):
        HierarchicalEncoder(enc, 8, summary_tokens=2, pooling="mean")
    with pytest.raises(ValueError, match="pooling must be"):
        HierarchicalEncoder(enc, 8, pooling="median")
    with pytest.raises(ValueError, match="pooling='max'"):
        HierarchicalEncoder(enc, 8, summary_tokens=2, pooling="max")
    model = HierarchicalEncoder(enc, 8, second_level=TransformerEncoder(8, 1, 2))
    with pytest.raises(ValueError, match="second_level failed on summaries of shape \\(4, 4, 16\\)"):
        model(*batch())
    with pytest.raises(ValueError, match="HierarchicalEncoder mask"):
        model(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8))
