"""The encoder contract, checked identically for every encoder.

``forward(data, mask) -> Tokens`` with ``out_dim``; token masks follow the input lengths or
presence; gradients reach every trainable parameter; padding and missing samples never
change the outputs of real positions or of other samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from mmctx.encoders import (
    HFSpeechEncoder,
    HFTextEncoder,
    HFVisionEncoder,
    RNNAudioEncoder,
    TextTransformerEncoder,
    TimmImageEncoder,
)
from mmctx.layers import lengths_to_mask
from mmctx.types import Tokens

VOCAB = 40
B = 4
MISSING = 2  # index of the sample that lacks the modality in every batch below


@dataclass
class Case:
    """How to build, feed and check one encoder."""

    build: Callable[[], nn.Module]
    batch: Callable[[], tuple[Tensor, Tensor]]
    expected_mask: Callable[[nn.Module, Tensor, Tensor], Tensor]
    perturb_padding: Callable[[Tensor, Tensor], Tensor]
    sequence: bool  # data and mask are (B, L) sequences that can be cut to a sample's length
    train_mode: bool = False  # run the padding/missing checks in train mode (BatchNorm)


def _text_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([9, 5, 0, 2])
    data = torch.randint(1, VOCAB, (B, 9), generator=g)
    return data, lengths_to_mask(lengths, 9)


def _text_perturb(data: Tensor, mask: Tensor) -> Tensor:
    # garbage, even out of the vocabulary, at padding: it must never be read
    noise = torch.randint(VOCAB, 10 * VOCAB, data.shape, generator=torch.Generator().manual_seed(2))
    return torch.where(mask, data, noise)


def _image_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, 3, 32, 32, generator=g), torch.tensor([True, True, False, True])


def _image_perturb(data: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask[:, None, None, None], data, torch.full_like(data, float("nan")))


AUDIO_S = 3200  # 0.2 s at 16 kHz


def _audio_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([AUDIO_S, 2100, 0, 1500])
    return torch.randn(B, AUDIO_S, generator=g), lengths_to_mask(lengths, AUDIO_S)


def _audio_perturb(data: Tensor, mask: Tensor) -> Tensor:
    noise = 100.0 * torch.randn(data.shape, generator=torch.Generator().manual_seed(2))
    return torch.where(mask, data, noise)


def _audio_expected_mask(enc: RNNAudioEncoder, data: Tensor, mask: Tensor) -> Tensor:
    # 3200 samples → 18 STFT frames → 8 → 3 tokens; 2100 → 2 tokens; 1500 → 1 token
    assert enc.output_lengths(torch.tensor([AUDIO_S, 2100, 1500])).tolist() == [3, 2, 1]
    return lengths_to_mask(enc.output_lengths(mask.sum(1)), 3)


def _audio(rnn_type: str, bidirectional: bool) -> Callable[[], nn.Module]:
    return lambda: RNNAudioEncoder(
        n_mels=16, n_fft=400, hop_length=160, conv_channels=8, hidden_dim=16, num_layers=2,
        rnn_type=rnn_type, bidirectional=bidirectional, out_dim=16,
    )


TINY_BERT = dict(
    model_type="bert", vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)

_HF_VISION = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8)
_HF_W2V = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=[8, 8], conv_kernel=[10, 3],
    conv_stride=[5, 2], num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, layerdrop=0.0, mask_time_prob=0.0,
)
TINY_WHISPER = dict(
    model_type="whisper", d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
    decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=16, max_source_positions=50, max_target_positions=8,
)


def _hf_vision_case(config: dict) -> Case:
    return Case(
        build=lambda: HFVisionEncoder(config=dict(config), out_dim=16),
        batch=_image_batch,
        expected_mask=lambda enc, data, mask: mask[:, None].expand(B, enc.num_tokens(32, 32)),
        perturb_padding=_image_perturb,
        sequence=False,
    )


def _hf_speech_case(config: dict) -> Case:
    def expected(enc: HFSpeechEncoder, data: Tensor, mask: Tensor) -> Tensor:
        n = 50 if enc.family == "whisper" else int(enc.output_lengths(torch.tensor(AUDIO_S)))
        return lengths_to_mask(enc.output_lengths(mask.sum(1)), n)

    return Case(
        build=lambda: HFSpeechEncoder(config=dict(config), out_dim=16),
        batch=_audio_batch,
        expected_mask=expected,
        perturb_padding=_audio_perturb,
        sequence=True,
    )


CASES: dict[str, Case] = {
    "hf_vit": _hf_vision_case(dict(model_type="vit", **_HF_VISION)),
    "hf_clip": _hf_vision_case(dict(model_type="clip_vision_model", **_HF_VISION)),
    "hf_siglip": _hf_vision_case(dict(model_type="siglip_vision_model", **_HF_VISION)),
    "hf_convnext": _hf_vision_case(dict(model_type="convnext", hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
    "hf_wav2vec2": _hf_speech_case(dict(model_type="wav2vec2", **_HF_W2V)),
    "hf_wav2vec2_layer": _hf_speech_case(dict(model_type="wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True, **_HF_W2V)),
    "hf_hubert": _hf_speech_case(dict(model_type="hubert", **_HF_W2V)),
    "hf_whisper": _hf_speech_case(TINY_WHISPER),
    "text": Case(
        build=lambda: TextTransformerEncoder(VOCAB, dim=16, num_layers=2, num_heads=2, max_seq_len=32),
        batch=_text_batch,
        expected_mask=lambda enc, data, mask: mask,
        perturb_padding=_text_perturb,
        sequence=True,
    ),
    "hf": Case(
        build=lambda: HFTextEncoder(config=dict(TINY_BERT), out_dim=8),
        batch=_text_batch,
        expected_mask=lambda enc, data, mask: mask,
        perturb_padding=_text_perturb,
        sequence=True,
    ),
    "image": Case(
        build=lambda: TimmImageEncoder("resnet10t", out_dim=16, stage=2),
        batch=_image_batch,
        expected_mask=lambda enc, data, mask: mask[:, None].expand(B, 16),  # 32/8 = 4×4 grid
        perturb_padding=_image_perturb,
        sequence=False,
        train_mode=True,
    ),
    "audio_gru": Case(
        build=_audio("gru", False),
        batch=_audio_batch,
        expected_mask=_audio_expected_mask,
        perturb_padding=_audio_perturb,
        sequence=True,
    ),
    "audio_lstm_bi": Case(
        build=_audio("lstm", True),
        batch=_audio_batch,
        expected_mask=_audio_expected_mask,
        perturb_padding=_audio_perturb,
        sequence=True,
    ),
}


@pytest.fixture(params=sorted(CASES))
def case_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def case(case_name: str) -> Case:
    return CASES[case_name]


def _build(case: Case) -> nn.Module:
    torch.manual_seed(0)
    return case.build()


def test_shapes_and_mask(case: Case) -> None:
    enc = _build(case).eval()
    data, mask = case.batch()
    out = enc(data, mask)
    assert isinstance(out, Tokens)
    want = case.expected_mask(enc, data, mask)
    assert out.x.shape == (B, want.shape[1], enc.out_dim)
    assert out.mask.dtype == torch.bool and out.mask.shape == want.shape
    assert torch.equal(out.mask, want)
    assert not out.mask[MISSING].any()
    assert torch.isfinite(out.x).all()
    assert (out.x[~out.mask] == 0).all(), "padding and missing rows must be zeros"


#: Parameters that cannot get a gradient by construction, per case: pattern → why.
DEAD_PARAMETERS: dict[str, dict[str, str]] = {
    "hf": {
        "*.attention.self.key.bias": "BERT's key bias adds q·b_k to every key's score of a query; "
        "the softmax over keys is invariant to that shift",
    },
    **{name: {"*.k_proj.bias": "the key bias adds q·b_k to every key's score of a query; the softmax "
              "over keys is invariant to that shift"}
       for name in ("hf_vit", "hf_clip", "hf_siglip", "hf_wav2vec2", "hf_wav2vec2_layer", "hf_hubert")},
}


def test_gradients_reach_every_parameter(case_name: str, assert_gradients) -> None:
    case = CASES[case_name]
    enc = _build(case).eval().double()
    with torch.no_grad():
        # timm zero-initialises the last BatchNorm scale of each residual branch, which blocks
        # the gradient into that branch at step 0 only; give such scales a value
        for name, p in enc.named_parameters():
            if name.endswith("weight") and (p == 0).all():
                p.fill_(1.0)
    data, mask = case.batch()
    out = enc(data.double() if data.is_floating_point() else data, mask)
    weights = torch.randn(out.x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (out.x * weights).sum().backward()
    assert_gradients(enc, DEAD_PARAMETERS.get(case_name))


def test_padding_values_never_change_real_outputs(case: Case) -> None:
    enc = _build(case).train(case.train_mode)
    data, mask = case.batch()
    ref = enc(data, mask)
    out = enc(case.perturb_padding(data, mask), mask)
    assert torch.equal(out.mask, ref.mask)
    torch.testing.assert_close(out.x, ref.x, atol=1e-6, rtol=0)


def test_missing_sample_does_not_change_others(case: Case) -> None:
    enc = _build(case).train(case.train_mode)
    data, mask = case.batch()
    out = enc(case.perturb_padding(data, mask), mask)
    assert not out.mask[MISSING].any() and (out.x[MISSING] == 0).all()
    # the same batch without the missing sample at all (same BatchNorm population)
    keep = torch.tensor([b for b in range(B) if b != MISSING])
    alone = enc(data[keep], mask[keep])
    torch.testing.assert_close(out.x[keep], alone.x, atol=1e-5, rtol=0)
    assert torch.equal(out.mask[keep], alone.mask)


def test_all_missing_batch(case: Case) -> None:
    enc = _build(case).train(case.train_mode)
    data, mask = case.batch()
    ref = enc.eval()(data, mask)
    out = enc.train(case.train_mode)(case.perturb_padding(data, torch.zeros_like(mask)), torch.zeros_like(mask))
    assert out.x.shape == ref.x.shape
    assert not out.mask.any() and (out.x == 0).all()


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.sequence))
def test_padded_batch_equals_each_sample_alone(name: str) -> None:
    case = CASES[name]
    enc = _build(case).eval()
    data, mask = case.batch()
    out = enc(data, mask)
    for b in range(B):
        length = int(mask[b].sum())
        if length == 0:
            continue
        alone = enc(data[b : b + 1, :length], mask[b : b + 1, :length])
        n = int(alone.mask.sum())
        assert n == int(out.mask[b].sum()) and alone.mask[0, :n].all()  # real tokens first (Whisper pads to its window)
        torch.testing.assert_close(out.x[b, :n], alone.x[0, :n], atol=1e-5, rtol=0)
