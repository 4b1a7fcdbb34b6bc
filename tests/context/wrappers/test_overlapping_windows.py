"""Windowed encoding: any length through a fixed-window encoder, overlaps merged smoothly."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mmctx.context import OverlappingWindowEncoder
from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder
from mmctx.layers import lengths_to_mask
from mmctx.types import Tokens

VOCAB = 50


def text_encoder(max_seq_len: int = 64) -> TextTransformerEncoder:
    torch.manual_seed(0)
    return TextTransformerEncoder(VOCAB, dim=16, num_layers=2, num_heads=2, max_seq_len=max_seq_len).eval()


def text_batch(lengths: list[int], T: int | None = None, seed: int = 1) -> tuple[Tensor, Tensor]:
    T = max(lengths) if T is None else T
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (len(lengths), T), generator=g), lengths_to_mask(torch.tensor(lengths), T)


class PointwiseEncoder(nn.Module):
    """One token per position, each depending on its own input only (no context)."""

    def __init__(self) -> None:
        super().__init__()
        self.out_dim = 8
        self.embed = nn.Embedding(VOCAB, 8)

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        return Tokens(self.embed(data.clamp(0, VOCAB - 1)) * mask[..., None], mask)


class FrameEncoder(nn.Module):
    """An audio-like encoder: token j sees samples [4j, 4j + 8) only; r = 4 samples per token."""

    def __init__(self) -> None:
        super().__init__()
        self.out_dim = 6
        self.proj = nn.Linear(8, 6)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        lengths = lengths.long()
        return torch.where(lengths >= 8, torch.div(lengths - 8, 4, rounding_mode="floor") + 1, torch.zeros_like(lengths))

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        N = max(int(self.output_lengths(torch.tensor(data.shape[1]))), 1)
        frames = torch.nn.functional.pad(data * mask, (0, 8)).unfold(1, 8, 4)[:, :N]  # (B, N, 8)
        tok_mask = torch.arange(N)[None, :] < self.output_lengths(mask.sum(1))[:, None]
        return Tokens(self.proj(frames) * tok_mask[..., None], tok_mask)


@pytest.mark.parametrize("window,max_window_tokens", [(20, None), (32, None), (8, 32)])
def test_window_covering_the_input_equals_plain_encoding_exactly(window, max_window_tokens):
    enc = text_encoder()
    data, mask = text_batch([20, 13, 0, 7])
    windowed = OverlappingWindowEncoder(enc, window=window, stride=window - 2, max_window_tokens=max_window_tokens)
    out, ref = windowed(data, mask), enc(data, mask)
    assert torch.equal(out.x, ref.x) and torch.equal(out.mask, ref.mask)


@pytest.mark.parametrize("T", [1, 7, 8, 13, 17, 23, 50])
@pytest.mark.parametrize("smoothing", ["linear", "mean", "none"])
def test_any_length_gives_one_token_per_position(T, smoothing):
    enc = text_encoder()
    lengths = [T, max(T - 5, 1), 0, max(T // 2, 1)]
    data, mask = text_batch(lengths, T)
    mask[0, T // 3 : T // 2] = False  # a hole: non-prefix masks work for one-token-per-position encoders
    out = OverlappingWindowEncoder(enc, window=8, stride=5, smoothing=smoothing)(data, mask)
    assert out.x.shape == (4, T, 16)
    assert torch.equal(out.mask, mask)
    assert torch.isfinite(out.x).all() and (out.x[~mask] == 0).all()


def test_context_free_encoder_is_reproduced_exactly_for_any_windows():
    """With an encoder whose tokens need no context, windows are invisible: every token lands
    at its own position and the merge weights sum to 1."""
    torch.manual_seed(0)
    enc = PointwiseEncoder()
    data, mask = text_batch([61, 40, 0, 3, 17], 61)
    ref = enc(data, mask)
    for window, stride in [(8, 5), (10, 3), (7, 7), (16, 1)]:
        for smoothing in ("linear", "mean", "none"):
            out = OverlappingWindowEncoder(enc, window, stride, smoothing)(data, mask)
            torch.testing.assert_close(out.x, ref.x, atol=1e-6, rtol=0)
            assert torch.equal(out.mask, ref.mask)


def test_frame_rate_encoder_windows_map_exactly_to_the_tokens_of_the_whole_input():
    torch.manual_seed(0)
    enc = FrameEncoder()
    wrapped = OverlappingWindowEncoder(enc, window=40, stride=24)
    assert wrapped.units_per_token == 4
    lengths = [203, 123, 0, 9, 7, 40]  # 7 samples: too short for one token
    g = torch.Generator().manual_seed(0)
    data, mask = torch.randn(len(lengths), 203, generator=g), lengths_to_mask(torch.tensor(lengths), 203)
    ref, out = enc(data, mask), wrapped(data, mask)
    assert out.x.shape == ref.x.shape
    assert torch.equal(out.mask, ref.mask)
    torch.testing.assert_close(out.x, ref.x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="multiple of the encoder's token step 4"):
        OverlappingWindowEncoder(enc, window=40, stride=22)
    with pytest.raises(ValueError, match="increase the overlap"):
        OverlappingWindowEncoder(enc, window=16, stride=16)


def test_audio_encoder_windows():
    torch.manual_seed(0)
    enc = RNNAudioEncoder(n_mels=16, n_fft=400, hop_length=160, conv_channels=4, hidden_dim=8, num_layers=1, out_dim=8).eval()
    lengths = torch.tensor([9000, 5100, 0, 1400])
    data, mask = torch.randn(4, 9000), lengths_to_mask(lengths, 9000)
    whole = OverlappingWindowEncoder(enc, window=9600, stride=1280)
    assert whole.units_per_token == 4 * 160
    ref = enc(data, mask)
    out = whole(data, mask)
    assert torch.equal(out.x, ref.x) and torch.equal(out.mask, ref.mask)
    windowed = OverlappingWindowEncoder(enc, window=3200, stride=1280)
    out = windowed(data, mask)
    assert out.x.shape == ref.x.shape and torch.equal(out.mask, ref.mask)  # same tokens, same places
    assert torch.isfinite(out.x).all() and (out.x[~out.mask] == 0).all()
    out.x[out.mask].pow(2).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


class WindowNormEncoder(nn.Module):
    """One token per position: the value minus the mean of the real values it was encoded
    with — the per-utterance normalisation of the audio encoder, in its simplest form. A
    window's tokens are then offset by that window's mean: windows disagree by a constant."""

    out_dim = 1

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        m = mask.float()
        mean = (data * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
        return Tokens(((data - mean) * m).unsqueeze(-1), mask)


def _max_step(x: Tensor) -> float:
    return float((x[1:] - x[:-1]).abs().max())


def test_linear_smoothing_removes_the_jump_at_window_boundaries():
    """On a ramp x(t) = t/10 (neighbouring tokens differ by 0.1 in a one-pass encoding),
    consecutive windows (window 40, stride 20) disagree by a constant offset of 2.0 (their
    means differ by stride/10). A hard cut ("none") steps by |0.1 - 2.0| = 1.9 at each
    boundary and a plain mean by ~1.0 where a window enters; the linear cross-fade spreads
    the 2.0 over the 21 overlap steps, so no step exceeds |neighbour| + 2.0/21 (the general
    bound: the cross-fade adds offset/(overlap+1) per step) — here not even the 0.1 of the
    one-pass encoding, since the offset runs against the ramp."""
    T = 200
    data = (torch.arange(T, dtype=torch.float32) / 10)[None]  # (1, T)
    mask = torch.ones(1, T, dtype=torch.bool)
    enc = WindowNormEncoder()
    neighbour = _max_step(enc(data, mask).x[0, :, 0])
    assert neighbour == pytest.approx(0.1, abs=1e-4)
    step = {}
    for smoothing in ("linear", "mean", "none"):
        merged = OverlappingWindowEncoder(enc, window=40, stride=20, smoothing=smoothing)(data, mask).x[0, :, 0]
        step[smoothing] = _max_step(merged)
    assert step["none"] == pytest.approx(1.9, abs=1e-3)  # the boundary effect is real and measured
    assert step["mean"] > 0.9
    assert step["linear"] <= 0.1 + 2.0 / 21 + 1e-4  # bounded by neighbour + offset / (overlap + 1)
    assert step["linear"] <= neighbour + 1e-4  # no larger than the neighbour differences
    assert step["linear"] < 0.1 * step["none"]


def test_linear_smoothing_with_the_text_encoder_stays_close_to_one_pass_encoding():
    """The real text encoder over random tokens: every merged token stays close to the one-pass
    encoding of the whole input (the encoder here accepts the full length), and the largest
    step between neighbours is the encoder's own (content changes dominate)."""
    enc = text_encoder(max_seq_len=256)
    data, mask = text_batch([160], seed=3)
    full = enc(data, mask).x[0].detach()
    merged = OverlappingWindowEncoder(enc, window=32, stride=20)(data, mask).x[0].detach()
    neighbour = (full[1:] - full[:-1]).norm(dim=-1)
    err = (merged - full).norm(dim=-1)
    assert err.max() < 0.25 * neighbour.median()
    assert ((merged[1:] - merged[:-1]).norm(dim=-1) - neighbour).abs().max() < 0.25 * neighbour.median()


def test_padding_and_other_samples_never_change_a_sample():
    enc = text_encoder()
    data, mask = text_batch([57, 23, 0, 9], 64)
    for kwargs in (dict(window=16, stride=10), dict(window=8, stride=6, max_window_tokens=24)):
        wrapped = OverlappingWindowEncoder(enc, **kwargs)
        out = wrapped(data, mask)
        for b, length in enumerate([57, 23, 0, 9]):
            if length == 0:
                assert not out.mask[b].any() and (out.x[b] == 0).all()
                continue
            alone = wrapped(data[b : b + 1, :length], mask[b : b + 1, :length])
            torch.testing.assert_close(out.x[b, :length], alone.x[0], atol=1e-5, rtol=0)
            assert (out.x[b, length:] == 0).all()


def test_dynamic_window_rule():
    wrapped = OverlappingWindowEncoder(text_encoder(), window=8, stride=6, max_window_tokens=32)  # overlap 2
    assert wrapped.window_for_length(20) == (32, 30)  # fits the budget: one window
    assert wrapped.window_for_length(100) == (27, 25)  # 4 even windows of <= 32 with overlap 2
    assert wrapped.window_for_length(33) == (18, 16)
    for length in range(33, 300, 7):
        w, s = wrapped.window_for_length(length)
        n = 1 + -(-(length - w) // s)
        assert w <= 32 and w - s == 2 and (n - 1) * s + w >= length


def test_gradients_reach_every_parameter():
    enc = text_encoder()
    data, mask = text_batch([30, 11])
    out = OverlappingWindowEncoder(enc, window=12, stride=8, window_batch_size=3)(data, mask)
    (out.x * torch.randn(out.x.shape)).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments_name_the_culprit():
    enc = text_encoder(max_seq_len=16)
    with pytest.raises(ValueError, match="stride must be in"):
        OverlappingWindowEncoder(enc, window=8, stride=9)
    with pytest.raises(ValueError, match="smoothing"):
        OverlappingWindowEncoder(enc, window=8, stride=4, smoothing="cosine")
    with pytest.raises(ValueError, match="max_seq_len=16"):
        OverlappingWindowEncoder(enc, window=32, stride=16)
    with pytest.raises(ValueError, match="max_window_tokens=4"):
        OverlappingWindowEncoder(enc, window=8, stride=4, max_window_tokens=4)
    with pytest.raises(ValueError, match="out_dim"):
        OverlappingWindowEncoder(nn.Linear(2, 2), window=8, stride=4)
    wrapped = OverlappingWindowEncoder(enc, window=8, stride=4)
    with pytest.raises(ValueError, match="OverlappingWindowEncoder data"):
        wrapped(torch.zeros(2, 3, 4, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="OverlappingWindowEncoder mask"):
        wrapped(torch.zeros(2, 30, dtype=torch.long), torch.ones(2, 30))

    class WithCls(PointwiseEncoder):
        def forward(self, data: Tensor, mask: Tensor) -> Tokens:
            tok = super().forward(data, mask)
            return Tokens(torch.cat([tok.x[:, :1], tok.x], 1), torch.cat([mask[:, :1], mask], 1))

    with pytest.raises(ValueError, match="gave 9 tokens for a window of 8"):
        OverlappingWindowEncoder(WithCls(), window=8, stride=4)(*text_batch([20]))
