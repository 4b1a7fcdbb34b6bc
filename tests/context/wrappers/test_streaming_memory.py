"""StreamingMemoryEncoder: streaming segment by segment equals the one-pass forward."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import RecurrentMemoryEncoder, StreamingMemoryEncoder
from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder
from mmctx.types import Tokens

D = 16


def _audio_model(segment: int = 3200, context: int = 1280, readout: str = "memory") -> StreamingMemoryEncoder:
    torch.manual_seed(0)
    audio = RNNAudioEncoder(
        sample_rate=8000, n_mels=16, n_fft=200, hop_length=80, conv_channels=8, hidden_dim=D, num_layers=1, out_dim=D
    )
    n = int(audio.output_lengths(torch.tensor(segment + context)))
    memory = RecurrentMemoryEncoder(D, 1, 2, segment_len=n, num_memory=3, bptt_segments=4, mlp_ratio=2.0)
    return StreamingMemoryEncoder(audio, memory, segment_len=segment, context_len=context, readout=readout).eval()


def _pieces(wave: torch.Tensor, sizes: list[int]):
    start, i = 0, 0
    while start < wave.shape[1]:
        size = sizes[i % len(sizes)]
        yield wave[:, start : start + size]
        start, i = start + size, i + 1


@pytest.mark.parametrize("readout", ["memory", "max"])
@pytest.mark.parametrize("length", [3200 * 12 + 700, 3200 * 15])  # 13 segments, a short tail; 15 whole
def test_audio_stream_equals_one_pass(length: int, readout: str) -> None:
    model = _audio_model(readout=readout)
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(2, length, generator=g) * 0.1
    mask = torch.ones(2, length, dtype=torch.bool)
    with torch.no_grad():
        one = model(wave, mask)
        # pieces of uneven sizes, none aligned with the segments
        streamed = model.stream(_pieces(wave, [1000, 5000, 333]))
    extra = 1 if readout == "max" else 0  # the running max token comes first
    assert one.x.shape == (2, 3 + extra, D) and one.mask.all()
    torch.testing.assert_close(streamed.x, one.x, rtol=1e-4, atol=1e-5)
    assert (one.x[:, extra:] - model.initial_memory(2)).abs().max() > 1e-3  # the memory did change


@pytest.mark.parametrize("readout", ["memory", "max"])
def test_padding_and_batch_do_not_change_a_sample(readout: str) -> None:
    """A short sample padded in a batch gets the memory it gets alone (and streamed alone)."""
    model = _audio_model(readout=readout)
    g = torch.Generator().manual_seed(2)
    wave = torch.randn(2, 3200 * 9, generator=g) * 0.1
    mask = torch.ones_like(wave, dtype=torch.bool)
    short = 3200 * 5 + 100  # its last segment is only 100 samples: too short for a token
    mask[1, short:] = False
    with torch.no_grad():
        batch = model(wave, mask)
        alone = model(wave[1:, :short], mask[1:, :short])
        streamed = model.stream(_pieces(wave[1:, :short], [4000]))
    torch.testing.assert_close(batch.x[1:], alone.x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(streamed.x, alone.x, rtol=1e-4, atol=1e-5)


def test_text_tokens_stream_and_gradients() -> None:
    """One token per unit (a text encoder): same equality; gradients reach every parameter."""
    torch.manual_seed(0)
    text = TextTransformerEncoder(vocab_size=17, dim=D, num_layers=1, num_heads=2, max_seq_len=16)
    memory = RecurrentMemoryEncoder(D, 1, 2, segment_len=12, num_memory=2, bptt_segments=8)
    model = StreamingMemoryEncoder(text, memory, segment_len=8, context_len=4)
    ids = torch.randint(0, 17, (2, 45))
    mask = torch.ones_like(ids, dtype=torch.bool)
    out = model(ids, mask)
    out.x.pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        streamed = model.stream(_pieces(ids, [7, 3]))
    torch.testing.assert_close(streamed.x, out.x.detach(), rtol=1e-4, atol=1e-5)


def test_wrong_memory_segment_len_names_the_value() -> None:
    text = TextTransformerEncoder(vocab_size=17, dim=D, num_layers=1, num_heads=2, max_seq_len=16)
    memory = RecurrentMemoryEncoder(D, 1, 2, segment_len=10, num_memory=2)
    with pytest.raises(ValueError, match="set the memory's segment_len to 12"):
        StreamingMemoryEncoder(text, memory, segment_len=8, context_len=4)


def test_max_readout_is_the_max_of_the_segment_tokens_and_keeps_a_loud_one() -> None:
    """Readout "max": the first token is the per-channel max of the memory encoder's segment
    outputs; a segment that stands out in a channel sets it, and later segments never undo it."""
    torch.manual_seed(0)
    text = TextTransformerEncoder(vocab_size=17, dim=D, num_layers=1, num_heads=2, max_seq_len=16)
    memory = RecurrentMemoryEncoder(D, 1, 2, segment_len=12, num_memory=2, bptt_segments=8)
    model = StreamingMemoryEncoder(text, memory, segment_len=8, context_len=4, readout="max").eval()
    ids = torch.randint(0, 17, (1, 80))
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        out = model(ids, mask)
        # the same max, from the memory encoder's per-segment outputs computed by hand
        windows = torch.nn.functional.pad(ids, (4, 0)).unfold(1, 12, 8)  # (1, 10, 12)
        wmask = torch.nn.functional.pad(mask, (4, 0), value=False).unfold(1, 12, 8)
        x, m = model._encode_windows(windows.reshape(10, 12), wmask.reshape(10, 12))
        seq, _ = memory.encode(Tokens(x.reshape(1, 120, D), m.reshape(1, 120)))
        expected = seq.x.masked_fill(~seq.mask[..., None], float("-inf")).amax(dim=1)  # (1, D)
        torch.testing.assert_close(out.x[:, 0], expected)
        # append many more segments: a channel's max can only grow, never drop
        longer = torch.cat([ids, torch.randint(0, 17, (1, 400))], dim=1)
        out2 = model(longer, torch.ones_like(longer, dtype=torch.bool))
    assert bool((out2.x[:, 0] >= out.x[:, 0] - 1e-6).all())
    assert out.mask.shape == (1, 3) and out.mask.all()


def test_max_readout_gradients_and_missing_sample() -> None:
    torch.manual_seed(0)
    text = TextTransformerEncoder(vocab_size=17, dim=D, num_layers=1, num_heads=2, max_seq_len=16)
    memory = RecurrentMemoryEncoder(D, 1, 2, segment_len=12, num_memory=2, bptt_segments=8)
    model = StreamingMemoryEncoder(text, memory, segment_len=8, context_len=4, readout="max")
    ids = torch.randint(0, 17, (2, 45))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1] = False  # a missing sample
    out = model(ids, mask)
    assert out.x.shape == (2, 3, D) and out.mask[0].all() and not out.mask[1].any()
    assert out.x[1].abs().sum() == 0 and torch.isfinite(out.x).all()
    out.x.pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert text.embed.weight.grad.abs().sum() > 0  # the max reaches the token encoder


def test_unknown_readout_is_refused() -> None:
    text = TextTransformerEncoder(vocab_size=17, dim=D, num_layers=1, num_heads=2, max_seq_len=16)
    memory = RecurrentMemoryEncoder(D, 1, 2, segment_len=12, num_memory=2)
    with pytest.raises(ValueError, match="readout must be one of"):
        StreamingMemoryEncoder(text, memory, segment_len=8, context_len=4, readout="mean")


def test_token_centers_follow_the_segment_windows() -> None:
    """Token t of segment k is centred at max(k·S - C, 0) + t·stride + width // 2 samples."""
    model = _audio_model()  # S = 3200, C = 1280, stride 320, width 680
    n = model.tokens_per_segment
    centers = model.token_centers(3)
    assert centers.shape == (3 * n,)
    assert model.encoder.token_stride == 320 and model.encoder.token_width == 200 + 6 * 80
    assert centers[0] == 340 and centers[1] == 660  # segment 0 has no context: starts at 0
    assert centers[n] == 3200 - 1280 + 340 and centers[2 * n + 2] == 6400 - 1280 + 2 * 320 + 340


def _frame_loss_setup() -> tuple[StreamingMemoryEncoder, torch.Tensor, torch.Tensor]:
    model = _audio_model(readout="max").train()
    wave = torch.randn(2, 3200 * 3, generator=torch.Generator().manual_seed(5)) * 0.1
    model(wave, torch.ones_like(wave, dtype=torch.bool))
    spans = torch.tensor([[1000, 2000], [5000, 5600]])
    labels = torch.tensor([2, 0])
    return model, spans, labels


def test_frame_loss_labels_the_tokens_inside_the_span() -> None:
    """Logits that say 'class labels[b]+1' exactly at the tokens centred in the span (and
    background elsewhere, memory included) give a loss near 0; shifting the span raises it."""
    model, spans, labels = _frame_loss_setup()
    out = model.last_tokens
    centers = model.token_centers(out.x.shape[1] // model.tokens_per_segment)
    inside = (centers[None] >= spans[:, :1]) & (centers[None] < spans[:, 1:])  # (B, L)
    # 1000..2000: segment 0 at 1300, 1620, 1940; 5000..5600: segment 1 (from 1920) at 5140, 5460 and
    # segment 2 (from 5120, its context) at 5460
    assert inside.sum(dim=1).tolist() == [3, 3]
    x = torch.zeros_like(out.x)
    x[..., 0] = 20.0
    for b in range(2):
        x[b, inside[b], 0] = 0.0
        x[b, inside[b], 1 + int(labels[b])] = 20.0
    model.last_tokens = Tokens(x, out.mask)
    memory = torch.zeros_like(model.last_memory)
    memory[..., 0] = 20.0
    model.last_memory = memory
    assert float(model.frame_loss(spans, labels, num_classes=4)) < 1e-6
    assert float(model.frame_loss(spans + 700, labels, num_classes=4)) > 10.0
    assert float(model.frame_loss(spans, (labels + 1) % 4, num_classes=4)) > 10.0


def test_frame_loss_reaches_the_audio_encoder_and_names_bad_input() -> None:
    model, spans, labels = _frame_loss_setup()
    loss = model.frame_loss(spans, labels, num_classes=4)
    loss.backward()
    grad = model.encoder.conv[0].weight.grad
    assert torch.isfinite(loss) and grad is not None and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="num_classes"):
        model.frame_loss(spans, labels, num_classes=D)
    with pytest.raises(ValueError, match="spans"):
        model.frame_loss(spans[:1], labels, num_classes=4)
    with pytest.raises(RuntimeError, match="forward first"):
        _audio_model().frame_loss(spans, labels, num_classes=4)
