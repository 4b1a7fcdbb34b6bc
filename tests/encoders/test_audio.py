"""RNNAudioEncoder specifics: output lengths, too-short inputs, mask layout, options."""

from __future__ import annotations

import pytest
import torch

from mmctx.encoders import RNNAudioEncoder
from mmctx.layers import lengths_to_mask


def _encoder(**overrides: object) -> RNNAudioEncoder:
    torch.manual_seed(0)
    args: dict = dict(n_mels=16, conv_channels=8, hidden_dim=16, num_layers=1, out_dim=8)
    args.update(overrides)
    return RNNAudioEncoder(**args).eval()


def test_output_lengths_formula() -> None:
    enc = _encoder()  # n_fft 400, hop 160
    assert enc.min_samples == 400 + 6 * 160
    lengths = torch.tensor([0, 399, 400, enc.min_samples - 1, enc.min_samples, 16000, 24000])
    # 24000 samples → 148 STFT frames → 73 → 36 tokens; 16000 → 98 → 48 → 23
    assert enc.output_lengths(lengths).tolist() == [0, 0, 0, 0, 1, 23, 36]


def test_output_lengths_match_mask() -> None:
    enc = _encoder()
    lengths = torch.tensor([5000, 1360, 0, 3333, 4000])
    out = enc(torch.randn(5, 5000), lengths_to_mask(lengths, 5000))
    assert torch.equal(out.mask.sum(1), enc.output_lengths(lengths))
    assert torch.equal(out.mask, lengths_to_mask(enc.output_lengths(lengths), out.x.shape[1]))
    assert out.x.shape[1] == int(enc.output_lengths(torch.tensor(5000)))


def test_too_short_sample_raises() -> None:
    enc = _encoder()
    lengths = torch.tensor([3000, 0, 1000])
    with pytest.raises(ValueError, match=r"sample 2 has 1000 real samples.*minimum 1360"):
        enc(torch.randn(3, 3000), lengths_to_mask(lengths, 3000))


def test_short_batch_of_missing_samples() -> None:
    out = _encoder()(torch.zeros(2, 100), torch.zeros(2, 100, dtype=torch.bool))
    assert out.x.shape == (2, 1, 8) and not out.mask.any()


@pytest.mark.parametrize(
    ("data", "mask", "match"),
    [
        (torch.randn(2, 3, 2000), torch.ones(2, 2000, dtype=torch.bool), "audio data"),
        (torch.randn(2, 2000), torch.ones(2, 1999, dtype=torch.bool), "audio mask"),
        (torch.randn(2, 2000), torch.ones(2, 2000), "audio mask.*bool"),
        (torch.ones(2, 2000, dtype=torch.long), torch.ones(2, 2000, dtype=torch.bool), "audio data.*floating"),
        (torch.randn(2, 2000), torch.tensor([[False] * 10 + [True] * 1990] * 2), "audio mask.*prefix"),
    ],
)
def test_bad_inputs_raise(data: torch.Tensor, mask: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _encoder()(data, mask)


def test_rnn_type_is_validated() -> None:
    with pytest.raises(ValueError, match="rnn_type"):
        _encoder(rnn_type="transformer")


@pytest.mark.parametrize(("rnn_type", "bidirectional"), [("gru", True), ("lstm", False)])
def test_options_build_and_run(rnn_type: str, bidirectional: bool) -> None:
    enc = _encoder(rnn_type=rnn_type, bidirectional=bidirectional, num_layers=2, dropout=0.1)
    out = enc.train()(torch.randn(2, 3000), torch.ones(2, 3000, dtype=torch.bool))
    assert out.x.shape == (2, 3, 8) and out.mask.all()


def test_front_end_stays_float32_under_bfloat16() -> None:
    enc = _encoder().to(torch.bfloat16)
    out = enc(torch.randn(2, 3000, dtype=torch.bfloat16), torch.ones(2, 3000, dtype=torch.bool))
    assert out.x.dtype == torch.bfloat16 and torch.isfinite(out.x.float()).all()
    assert next(enc.melspec.buffers()).dtype == torch.float32


def test_pretrained_rnn_loads_matching_tensors_and_refuses_others(tmp_path) -> None:
    source = RNNAudioEncoder(n_mels=16, hidden_dim=16, num_layers=2, rnn_type="lstm", bidirectional=False, rnn_input_dim=8)
    path = tmp_path / "rnn.pt"
    torch.save({"model_state": {f"lstm.{k}": v for k, v in source.rnn.state_dict().items()}, "step": 3}, path)
    enc = RNNAudioEncoder(n_mels=16, hidden_dim=16, num_layers=2, rnn_type="lstm", bidirectional=False, rnn_input_dim=8,
                          pretrained_rnn=str(path))
    for name, value in enc.rnn.state_dict().items():
        assert torch.equal(value, source.rnn.state_dict()[name])
    assert enc.input_proj.out_features == 8 and enc.skip.in_features == 8
    with pytest.raises(ValueError, match=r"(?s)does not fit this GRU.*weight_ih_l0"):
        RNNAudioEncoder(n_mels=16, hidden_dim=16, num_layers=2, rnn_type="gru", pretrained_rnn=str(path))
    with pytest.raises(ValueError, match="not a local file"):
        RNNAudioEncoder(pretrained_rnn=str(tmp_path / "absent.pt"))
