"""HFSpeechEncoder: wav2vec2 / HuBERT / Whisper random-init, masks from the model's downsampling,
preprocessing equal to the feature extractors, freezing and partial fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmctx.encoders import HFSpeechEncoder
from mmctx.layers import lengths_to_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(config: dict, **overrides: object) -> HFSpeechEncoder:
    torch.manual_seed(0)
    return HFSpeechEncoder(config=config, **overrides)


def _speech_like(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    """Chirps with harmonics and noise at 16 kHz, one per length."""
    rng = np.random.default_rng(seed)
    waves = []
    for n in lengths:
        t = np.arange(n) / 16000
        f0 = rng.uniform(100, 250)
        wave = sum(np.sin(2 * np.pi * k * f0 * t * (1 + 0.3 * t)) / k for k in range(1, 5))
        waves.append((0.3 * wave + 0.01 * rng.standard_normal(n)).astype(np.float32))
    return waves


def _batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    S = max(len(w) for w in waves)
    data = torch.zeros(len(waves), S)
    for b, w in enumerate(waves):
        data[b, : len(w)] = torch.from_numpy(w)
    return data, lengths_to_mask(torch.tensor([len(w) for w in waves]), S)


@pytest.mark.parametrize(
    ("family", "backbone", "per_sample"),
    [("wav2vec2", "Wav2Vec2Model", True), ("wav2vec2_layer", "Wav2Vec2Model", False), ("hubert", "HubertModel", True),
     ("whisper", "WhisperEncoder", False)],
)
def test_every_family_gives_frame_tokens(tiny: dict, family: str, backbone: str, per_sample: bool) -> None:
    enc = _encoder(tiny[family], out_dim=8).eval()
    assert type(enc.backbone).__name__ == backbone and enc.per_sample == per_sample and enc.sample_rate == 16000
    data, mask = _batch(_speech_like([4000, 2500, 1200]))
    out = enc(data, mask)
    lengths = enc.output_lengths(mask.sum(1))
    assert torch.equal(out.mask, lengths_to_mask(lengths, out.x.shape[1])) and out.x.shape[-1] == 8
    assert (out.x[~out.mask] == 0).all()
    assert next(enc.parameters()).dtype == torch.float32


def test_wav2vec2_mask_follows_the_model_downsampling(tiny: dict) -> None:
    enc = _encoder(tiny["wav2vec2"])
    lengths = torch.tensor([16000, 4000, 19, 20])
    # conv kernels (10, 3), strides (5, 2): frames = ((L - 10) // 5 + 1 - 3) // 2 + 1
    expected = [((n - 10) // 5 + 1 - 3) // 2 + 1 for n in (16000, 4000)] + [0, 1]
    assert enc.output_lengths(lengths).tolist() == expected and enc.min_samples == 20
    assert torch.equal(enc.output_lengths(lengths)[:2], enc.backbone._get_feat_extract_output_lengths(lengths[:2]))
    with pytest.raises(ValueError, match="fewer than the 20"):
        enc(torch.zeros(1, 19), torch.ones(1, 19, dtype=torch.bool))


def test_real_wav2vec2_geometry() -> None:
    """The released wav2vec2 conv stack: 400 samples for the first frame, then one per 320 (20 ms)."""
    enc = _encoder({"model_type": "wav2vec2", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "intermediate_size": 32, "num_conv_pos_embeddings": 4, "num_conv_pos_embedding_groups": 2})
    assert enc.min_samples == 400
    assert enc.output_lengths(torch.tensor([400, 16000, 48000])).tolist() == [1, 49, 149]


def test_whisper_mask_follows_the_true_length(tiny: dict) -> None:
    enc = _encoder(tiny["whisper"])
    assert (enc.n_samples, enc.hop_length) == (16000, 160)  # the tiny config's 1 s window
    lengths = torch.tensor([16000, 3200, 3201, 1, 0])
    # mel frames ceil(L / 160), then the stride-2 conv: ceil(frames / 2)
    assert enc.output_lengths(lengths).tolist() == [50, 10, 11, 1, 0]
    with pytest.raises(ValueError, match="reads at most 16000"):
        enc(torch.zeros(1, 16001), torch.ones(1, 16001, dtype=torch.bool))


def test_whisper_log_mel_equals_the_feature_extractor(tiny: dict) -> None:
    from transformers import WhisperFeatureExtractor

    enc = _encoder(tiny["whisper"])
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    waves = _speech_like([16000, 7000, 2345])
    expected = extractor(waves, sampling_rate=16000, return_tensors="np").input_features  # (3, 16, 100), numpy path
    data, _ = _batch(waves)
    data = torch.nn.functional.pad(data, (0, 16000 - data.shape[1]))
    got = enc.log_mel(data)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4, rtol=0)


def test_whisper_real_size_log_mel_equals_the_feature_extractor() -> None:
    """The released models' front end: 80 mel bins, 30 s window, 3000 frames."""
    from transformers import WhisperFeatureExtractor

    enc = _encoder({"model_type": "whisper", "d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
                    "encoder_ffn_dim": 32, "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32,
                    "max_target_positions": 8})
    assert enc.n_samples == 480000 and enc.mel_filters.shape[0] == 80
    waves = _speech_like([48000])
    expected = WhisperFeatureExtractor()(waves, sampling_rate=16000, return_tensors="np").input_features
    data = torch.nn.functional.pad(torch.from_numpy(waves[0])[None], (0, 480000 - 48000))
    np.testing.assert_allclose(enc.log_mel(data).numpy(), expected, atol=2e-4, rtol=0)


def test_wav2vec2_normalisation_equals_the_feature_extractor(tiny: dict, tmp_path: Path) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    enc = _encoder(tiny["wav2vec2_layer"])
    enc.backbone.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    loaded = HFSpeechEncoder(model=str(tmp_path))
    assert loaded.do_normalize
    waves = _speech_like([6000, 3000, 1000], seed=1)
    waves = [w * s + o for w, s, o in zip(waves, (3.0, 0.1, 1.0), (0.5, 0.0, -0.2))]  # other gains and offsets
    expected = extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    data, mask = _batch(waves)
    got = loaded._normalise(data.masked_fill(~mask, 0.0), mask.sum(1))
    torch.testing.assert_close(got, expected.input_values, atol=1e-5, rtol=0)
    # and the encoder's tokens equal the backbone run on the feature extractor's output
    with torch.no_grad():
        tokens = loaded.eval()(data, mask)
        reference = loaded.backbone(**expected).last_hidden_state
    n = loaded.output_lengths(mask.sum(1))
    for b in range(3):
        torch.testing.assert_close(tokens.x[b, : n[b]], reference[b, : n[b]], atol=1e-5, rtol=0)


def _step(enc: HFSpeechEncoder, data: torch.Tensor, mask: torch.Tensor) -> set[str]:
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    optimizer = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    enc.train()(data, mask).x.square().sum().backward()
    optimizer.step()
    return {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_freeze_keeps_weights_and_eval_mode(tiny: dict, family: str) -> None:
    enc = _encoder(tiny[family], out_dim=8, freeze=True)
    data, mask = _batch(_speech_like([4000, 2000]))
    assert _step(enc, data, mask) == {"proj.weight", "proj.bias"}
    assert enc.training and not any(m.training for m in enc.backbone.modules())


@pytest.mark.parametrize("family", ["hubert", "whisper"])
def test_train_last_layers(tiny: dict, family: str) -> None:
    enc = _encoder(tiny[family], train_last_layers=1)
    trainable = {n for n, p in enc.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.1." in f".{n}" or "layer_norm" in n for n in trainable)
    data, mask = _batch(_speech_like([4000, 2000]))
    changed = {n.removeprefix("backbone.") for n in _step(enc, data, mask)}
    assert changed == trainable
    from mmctx.encoders._finetune import find_layer_list

    layers = find_layer_list("test", enc.backbone)[1]
    assert enc.training and not layers[0].training and layers[1].training


def test_trainable_patterns_keep_the_feature_encoder_fixed(tiny: dict) -> None:
    enc = _encoder(tiny["wav2vec2_layer"], trainable=["encoder.*", "feature_projection.*"])
    data, mask = _batch(_speech_like([4000, 2000]))
    changed = _step(enc, data, mask)
    assert changed and all(n.startswith(("backbone.encoder.", "backbone.feature_projection.")) for n in changed)
    assert not enc.backbone.feature_extractor.training  # frozen: eval mode


def test_gradient_checkpointing(tiny: dict) -> None:
    data, mask = _batch(_speech_like([4000, 2000]))
    grads = []
    for checkpointing in (False, True):
        enc = _encoder(tiny["wav2vec2_layer"], gradient_checkpointing=checkpointing).train()
        enc(data, mask).x.sum().backward()
        grads.append(enc.backbone.encoder.layers[0].feed_forward.output_dense.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_unsupported_model_raises() -> None:
    with pytest.raises(ValueError, match="not a supported speech encoder"):
        _encoder({"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "intermediate_size": 32, "vocab_size": 30})
