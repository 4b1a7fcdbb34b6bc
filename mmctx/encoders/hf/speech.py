"""A ``transformers`` speech encoder (wav2vec2, HuBERT, WavLM, Whisper's encoder) → frame tokens."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmctx.encoders._checks import check_bool_mask, check_prefix_mask
from mmctx.encoders._finetune import check_finetune_args
from mmctx.encoders.hf._load import load_backbone, load_processor
from mmctx.layers import lengths_to_mask
from mmctx.encoders.hf._tower import HFTower
from mmctx.types import Tokens, check_shape

__all__ = ["HFSpeechEncoder"]


class HFSpeechEncoder(HFTower):
    """Wrap a Hugging Face speech encoder as an mmctx audio encoder over raw waveforms.

    The input is what the data side delivers with ``sample_rate`` set to the model's rate
    (:attr:`sample_rate`, 16 kHz for all of these): mono float waveforms, right-padded,
    with a per-sample mask. The model's own preprocessing runs here, in torch, from its
    feature extractor's settings:

    * wav2vec2-style models (wav2vec2, HuBERT, WavLM, data2vec-audio): each utterance is
      normalised to zero mean and unit variance over its real samples when the feature
      extractor says ``do_normalize``. Tokens are the transformer's frames (20 ms each), and
      the mask follows the model's own ``_get_feat_extract_output_lengths`` of the true
      lengths. Models whose convolutional feature encoder uses group norm
      (``feat_extract_norm="group"``: wav2vec2-base, HuBERT-base) normalise over the whole
      padded input and are trained without an attention mask, so each utterance is run on
      its own (padding then never changes its frames); the others run as one batch with an
      attention mask.
    * Whisper's encoder: every utterance is zero-padded to the model's fixed window (30 s
      for the released models: ``max_source_positions · 2 · hop_length`` samples) and turned
      into Whisper's log-mel spectrogram (the feature extractor's computation, in torch);
      the encoder gives ``max_source_positions`` tokens (20 ms each), of which the first
      ``ceil(ceil(L / hop_length) / 2)`` — the model's own conv-stride-2 downsampling of the
      true length L — are real. Longer utterances are an error: cut them in the data
      (``max_audio_seconds``) or with a windowed wrapper.

    Only present samples are computed; a missing sample (an all-False mask row) gets zero
    rows and an all-False token mask.

    Args:
        model: a hub id (``"facebook/wav2vec2-base"``, ``"facebook/hubert-base-ls960"``,
            ``"openai/whisper-tiny"``) or a local ``save_pretrained`` folder.
        config: config fields of a fresh model, including ``"model_type"``
            (``"wav2vec2"``, ``"hubert"``, ``"whisper"``, ...).
        out_dim: width of a Linear projection of the frames; None keeps the backbone's width.
        freeze: freeze the backbone and keep it in eval mode; the projection stays trainable.
        train_last_layers: train only the last K transformer layers and the norm after them.
        trainable: train only the backbone parameters matching these ``fnmatch`` patterns,
            e.g. everything but the convolutional feature encoder: ``["encoder.*",
            "feature_projection.*"]``.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        revision: a hub revision (branch, tag or commit) to pin.

    Attributes:
        out_dim: the token width D.
        sample_rate: the sampling rate the model expects, in Hz.
        family: ``"wav2vec2"`` (any model with ``_get_feat_extract_output_lengths``) or ``"whisper"``.
        min_samples: the shortest real waveform that gives one token.
        unused_parameters: backbone parameters frozen because the tokens never use them.
    """

    def __init__(
        self,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        out_dim: int | None = None,
        freeze: bool = False,
        train_last_layers: int | None = None,
        trainable: list[str] | None = None,
        gradient_checkpointing: bool = False,
        revision: str | None = None,
    ) -> None:
        super().__init__()
        owner = "HFSpeechEncoder"
        check_finetune_args(owner, freeze, train_last_layers, trainable)
        self.backbone = load_backbone(owner, model, config, revision)
        self.model_name = model
        hf_config = self.backbone.config
        extractor = load_processor(model, revision, "AutoFeatureExtractor")
        if hf_config.model_type == "whisper":
            self.family = "whisper"
            self._setup_whisper(owner, hf_config, extractor)
        elif hasattr(self.backbone, "_get_feat_extract_output_lengths"):
            self.family = "wav2vec2"
            if extractor is None:
                from transformers import Wav2Vec2FeatureExtractor

                extractor = Wav2Vec2FeatureExtractor()
            self.do_normalize = bool(getattr(extractor, "do_normalize", False))
            self.per_sample = getattr(hf_config, "feat_extract_norm", "layer") == "group"
            self.sample_rate = int(extractor.sampling_rate)
            self.min_samples = _min_samples(self.backbone)
        else:
            raise ValueError(
                f"{owner}: {type(self.backbone).__name__} is not a supported speech encoder; one of the "
                "wav2vec2 family (wav2vec2, HuBERT, WavLM, data2vec-audio) or Whisper"
            )
        hidden = getattr(hf_config, "hidden_size", None) or getattr(hf_config, "d_model", None)
        if not isinstance(hidden, int):
            raise ValueError(f"{owner}: the backbone config ({type(hf_config).__name__}) has no hidden_size/d_model")

        def probe() -> Tensor:
            length = max(self.min_samples, self.sample_rate // 10)
            wave = torch.zeros(1, length)
            return self._frames(wave, torch.tensor([length]))

        self._finish_backbone(owner, probe, hidden, out_dim, freeze, train_last_layers, trainable, gradient_checkpointing)

    def _setup_whisper(self, owner: str, hf_config: Any, extractor: Any) -> None:
        from transformers import WhisperFeatureExtractor

        strides = self.backbone.conv1.stride[0] * self.backbone.conv2.stride[0]
        frames = hf_config.max_source_positions * strides  # mel frames of the fixed window
        if extractor is None:
            hop, rate = 160, 16000
            seconds, rest = divmod(frames * hop, rate)
            if rest:
                raise ValueError(f"{owner}: max_source_positions={hf_config.max_source_positions} is not a whole second")
            extractor = WhisperFeatureExtractor(feature_size=hf_config.num_mel_bins, chunk_length=seconds)
        if extractor.nb_max_frames != frames or extractor.feature_size != hf_config.num_mel_bins:
            raise ValueError(
                f"{owner}: the feature extractor gives {extractor.feature_size}×{extractor.nb_max_frames} log-mel "
                f"frames, the encoder reads {hf_config.num_mel_bins}×{frames}"
            )
        self.sample_rate = int(extractor.sampling_rate)
        self.do_normalize = bool(getattr(extractor, "do_normalize", False))
        self.per_sample = False
        self.n_fft = int(extractor.n_fft)
        self.hop_length = int(extractor.hop_length)
        self.n_samples = int(extractor.n_samples)
        self.min_samples = 1
        self.register_buffer("mel_filters", torch.from_numpy(extractor.mel_filters).float().T.contiguous(), persistent=False)  # (M, F)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)  # (n_fft,)

    def output_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Number of real tokens for waveforms of the given numbers of real samples.

        Shapes:
            sample_lengths: (B,) integer → (B,) long; 0 where a waveform is too short
        """
        lengths = sample_lengths.long()
        if self.family == "whisper":
            frames = torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")  # ceil(L/hop)
            out = self.backbone._get_feat_extract_output_lengths(frames)
            return torch.where(lengths > 0, out, torch.zeros_like(out)).long()
        out = self.backbone._get_feat_extract_output_lengths(lengths)
        return torch.where(lengths >= self.min_samples, out, torch.zeros_like(out)).long()

    def log_mel(self, wave: Tensor) -> Tensor:
        """Whisper's log-mel spectrogram of zero-padded fixed-window waveforms, in float32.

        The computation of ``WhisperFeatureExtractor`` (centred STFT with a Hann window,
        power, Slaney mel filters, log10, clamped to 8 below each utterance's maximum,
        scaled by ``(x + 4) / 4``).

        Shapes:
            wave: (P, n_samples) → (P, M, n_samples / hop_length)
        """
        with torch.autocast(device_type=wave.device.type, enabled=False):
            stft = torch.stft(wave.float(), self.n_fft, self.hop_length, window=self.window.float(), return_complex=True)
            power = stft[..., :-1].abs() ** 2  # (P, F, T), the last frame dropped as Whisper does
            log_spec = (self.mel_filters.float() @ power).clamp_min(1e-10).log10()  # (P, M, T)
            peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (P, 1, 1)
            log_spec = torch.maximum(log_spec, peak - 8.0)
            return (log_spec + 4.0) / 4.0

    def _normalise(self, wave: Tensor, lengths: Tensor) -> Tensor:
        """Zero mean, unit variance over each waveform's real samples; padding stays 0.

        Shapes:
            wave: (P, S) zero after each length; lengths: (P,) → (P, S)
        """
        real = lengths_to_mask(lengths, wave.shape[1])  # (P, S)
        count = lengths.to(wave.dtype)[:, None]  # (P, 1)
        mean = wave.sum(dim=1, keepdim=True) / count
        var = ((wave - mean) ** 2 * real).sum(dim=1, keepdim=True) / count
        return ((wave - mean) * torch.rsqrt(var + 1e-7)).masked_fill(~real, 0.0)

    def _frames(self, wave: Tensor, lengths: Tensor) -> Tensor:
        """Run the backbone on present, zero-padded waveforms.

        Shapes:
            wave: (P, S) float; lengths: (P,) real samples → (P, N, hidden)
        """
        if self.do_normalize:
            wave = self._normalise(wave, lengths)
        if self.family == "whisper":
            if wave.shape[1] < self.n_samples:
                wave = nn.functional.pad(wave, (0, self.n_samples - wave.shape[1]))
            wave = wave[:, : self.n_samples]  # lengths were checked: only padding is cut
            return self.backbone(input_features=self.log_mel(wave).to(self.window.dtype)).last_hidden_state
        if self.per_sample:
            N = int(self.output_lengths(torch.tensor(wave.shape[1])))
            rows = []
            for b in range(wave.shape[0]):
                out = self.backbone(input_values=wave[b : b + 1, : int(lengths[b])]).last_hidden_state  # (1, n, hidden)
                rows.append(nn.functional.pad(out, (0, 0, 0, N - out.shape[1])))
            return torch.cat(rows)  # (P, N, hidden)
        attention = lengths_to_mask(lengths, wave.shape[1]).long()  # (P, S)
        return self.backbone(input_values=wave, attention_mask=attention).last_hidden_state

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode a batch of waveforms into frame tokens.

        Shapes:
            data: (B, S) float waveforms at :attr:`sample_rate`; values after each sample's
                length are ignored
            mask: (B, S) bool, True at real samples, a prefix of each row; an all-False row
                is a missing sample
            returns: Tokens with x (B, N, D) and mask (B, N), ``mask[b]`` True on the first
                ``output_lengths(len_b)`` tokens (N = ``output_lengths(S)``; Whisper: the
                fixed ``max_source_positions``); rows of padding and missing samples are zeros
        """
        check_shape("audio data", data, ("B", "S"))
        check_shape("audio mask", mask, tuple(data.shape))
        check_bool_mask("audio mask", mask)
        if not data.is_floating_point():
            raise ValueError(f"audio data: expected a floating-point waveform, got dtype {data.dtype}")
        B, S = data.shape
        lengths = check_prefix_mask("audio mask", mask)  # (B,)
        too_short = (lengths > 0) & (lengths < self.min_samples)
        if bool(too_short.any()):
            b = int(too_short.nonzero()[0])
            raise ValueError(
                f"audio data: sample {b} has {int(lengths[b])} real samples, fewer than the {self.min_samples} "
                "the model needs for one frame"
            )
        if self.family == "whisper":
            too_long = lengths > self.n_samples
            if bool(too_long.any()):
                b = int(too_long.nonzero()[0])
                raise ValueError(
                    f"audio data: sample {b} has {int(lengths[b])} samples; Whisper's encoder reads at most "
                    f"{self.n_samples} ({self.n_samples / self.sample_rate:g} s): cut longer audio in the data"
                )
            N = self.backbone.config.max_source_positions
        else:
            N = max(int(self.output_lengths(torch.tensor(S))), 1)
        token_lengths = self.output_lengths(lengths)  # (B,)
        present = (lengths > 0).nonzero().squeeze(1)  # (P,)
        x = data.new_zeros(B, N, self.out_dim)
        token_mask = torch.zeros(B, N, dtype=torch.bool, device=data.device)
        if present.numel() == 0:
            return Tokens(x, token_mask)
        lengths_p = lengths.index_select(0, present)  # (P,)
        wave = data.index_select(0, present).masked_fill(~mask.index_select(0, present), 0.0)  # (P, S)
        hidden = self._frames(wave, lengths_p)  # (P, N, hidden)
        out = self.proj(hidden) if self.proj is not None else hidden  # (P, N, D)
        mask_p = lengths_to_mask(token_lengths.index_select(0, present), N)  # (P, N)
        out = out.masked_fill(~mask_p.unsqueeze(-1), 0.0)
        x = x.to(out.dtype).index_copy(0, present, out)  # (B, N, D)
        token_mask = token_mask.index_copy(0, present, mask_p)  # (B, N)
        return Tokens(x, token_mask)

    def extra_repr(self) -> str:
        return f"model={self.model_name!r}, family={self.family!r}, sample_rate={self.sample_rate}, out_dim={self.out_dim}"


def _min_samples(backbone: nn.Module) -> int:
    """The fewest samples for which a wav2vec2-style feature encoder gives one frame."""
    length = 1
    while int(backbone._get_feat_extract_output_lengths(torch.tensor(length))) < 1:
        length *= 2
    low, high = length // 2, length
    while low + 1 < high:  # smallest length with one frame
        mid = (low + high) // 2
        low, high = (mid, high) if int(backbone._get_feat_extract_output_lengths(torch.tensor(mid))) < 1 else (low, mid)
    return high
