"""Adversarial generation heads: a conditional generator and a projection discriminator.

The generator turns noise and an :class:`~mmctx.types.ExtendedContext` (e.g. an encoded
caption, an audio clip, or both) into an image, or into a log-mel spectrogram treated as a
one-channel image (rows = frames, columns = mel bins). The discriminator scores an
(image, context) pair. Both are plain ``nn.Module`` s; the losses live in
:mod:`mmctx.losses.gan` and the training loop in :class:`mmctx.trainers.GANTask`.

Generated and real samples share one value range, ``[-1, 1]``: images are RGB scaled from
``[0, 1]``, spectrograms are :class:`LogMelCodec`'s normalised decibels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from mmctx.layers import MultiHeadAttention, masked_mean, sincos_2d
from mmctx.types import ExtendedContext, check_shape

__all__ = ["ConditionalGenerator", "SpectrogramGenerator", "ProjectionDiscriminator", "LogMelCodec"]

_CONDITIONS = ("pooled", "attention")
_NORMS = ("batch", "group", "none")


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` with spectral normalisation of its weight when ``enabled``."""
    return _spectral_norm(module) if enabled else module


def _norm(kind: str, channels: int) -> nn.Module:
    # affine=False: the scale and shift come from the condition (FiLM), see _UpBlock
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels, affine=False)
    return nn.Identity()


class _UpBlock(nn.Module):
    """×2 upsampling (transposed conv 4/2/1, DCGAN) → norm → FiLM from (condition, noise) →
    ReLU, then an optional residual cross-attention from every pixel to the context tokens."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        style_dim: int,
        norm: str,
        spectral_norm: bool,
        attention: bool,
        num_heads: int,
    ) -> None:
        super().__init__()
        self.conv = _sn(nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=norm == "none"), spectral_norm)
        self.norm = _norm(norm, out_channels)
        self.film = nn.Linear(style_dim, 2 * out_channels)
        nn.init.zeros_(self.film.weight)  # start as the plain unconditional block
        nn.init.zeros_(self.film.bias)
        self.attn = None
        if attention:
            heads = math.gcd(num_heads, out_channels)
            self.attn_norm = nn.LayerNorm(out_channels)
            self.attn = MultiHeadAttention(out_channels, heads, context_dim=dim)

    def forward(self, x: Tensor, style: Tensor, context: ExtendedContext) -> Tensor:
        """Shapes: x (B, C_in, h, w), style (B, D + Z), context.x (B, N, D) → (B, C_out, 2h, 2w)."""
        x = self.norm(self.conv(x))  # (B, C, 2h, 2w)
        gamma, beta = self.film(style)[:, :, None, None].chunk(2, dim=1)  # 2×(B, C, 1, 1)
        x = F.relu(x * (1 + gamma) + beta)
        if self.attn is not None:
            B, C, h, w = x.shape
            tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
            # 2-D positions tell each pixel where it is, so a word can be placed ("on the left")
            query = self.attn_norm(tokens + sincos_2d(h, w, C, device=x.device).to(x.dtype))
            out = self.attn(query, context=context.x, key_mask=context.mask)  # (B, h*w, C)
            x = x + out.transpose(1, 2).reshape(B, C, h, w)
        return x


class _UpsamplingGenerator(nn.Module):
    """Noise + context → (B, C, H, W) in [-1, 1]; see :class:`ConditionalGenerator`."""

    def __init__(
        self,
        dim: int,
        channels: int,
        height: int,
        width: int,
        z_dim: int,
        base_channels: int,
        max_channels: int,
        condition: str,
        attention_resolutions: list[int],
        num_heads: int,
        norm: str,
        spectral_norm: bool,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if condition not in _CONDITIONS:
            raise ValueError(f"{name}: condition must be one of {_CONDITIONS}, got {condition!r}")
        if norm not in _NORMS:
            raise ValueError(f"{name}: norm must be one of {_NORMS}, got {norm!r}")
        if min(height, width) < 4 or channels < 1 or z_dim < 1 or base_channels < 1:
            raise ValueError(
                f"{name}: output {channels}x{height}x{width} must be at least 4x4 with >= 1 channel, "
                f"z_dim={z_dim} and base_channels={base_channels} >= 1"
            )
        self.dim = dim  # the context width it reads (FusionModel checks it against fusion.out_dim)
        self.channels = channels
        self.height = height
        self.width = width
        self.z_dim = z_dim
        self.condition = condition
        # k ×2 stages from a small seed map; the output is cropped to (height, width)
        k = max(0, math.ceil(math.log2(min(height, width) / 4)))
        self.num_upsamples = k
        self.start = (math.ceil(height / 2**k), math.ceil(width / 2**k))
        widths = [min(max_channels, base_channels * 2 ** (k - i)) for i in range(k + 1)]
        self.cond_proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        h0, w0 = self.start
        self.seed = _sn(nn.Linear(z_dim + dim, widths[0] * h0 * w0), spectral_norm)
        self.seed_norm = _norm(norm, widths[0])
        blocks = []
        for i in range(k):
            resolution = min(h0, w0) * 2 ** (i + 1)
            attention = condition == "attention" and resolution in attention_resolutions
            blocks.append(
                _UpBlock(widths[i], widths[i + 1], dim, dim + z_dim, norm, spectral_norm, attention, num_heads)
            )
        self.blocks = nn.ModuleList(blocks)
        self.to_out = _sn(nn.Conv2d(widths[-1], channels, 3, padding=1), spectral_norm)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        return (self.channels, self.height, self.width)

    def forward(self, z: Tensor, context: ExtendedContext) -> Tensor:
        """Generate one sample per row of ``z``.

        Shapes:
            z: (B, Z) noise, e.g. ``torch.randn``
            context: ExtendedContext with x (B, N, D), mask (B, N); a sample whose mask is
                all False is generated unconditionally (its pooled condition is zeros)
            returns: (B, C, H, W) in [-1, 1]
        """
        check_shape("generator z", z, ("B", self.z_dim))
        check_shape("generator context.x", context.x, (z.shape[0], "N", self.dim))
        cond = self.cond_proj(masked_mean(context.x, context.mask))  # (B, D)
        h0, w0 = self.start
        x = self.seed(torch.cat([z, cond], dim=-1)).view(z.shape[0], -1, h0, w0)  # (B, C0, h0, w0)
        x = F.relu(self.seed_norm(x))
        style = torch.cat([cond, z], dim=-1)  # (B, D + Z): noise steers every block, not only the seed
        for block in self.blocks:
            x = block(x, style, context)  # (B, C_i, h0·2^i, w0·2^i)
        x = torch.tanh(self.to_out(x))  # (B, C, h0·2^k, w0·2^k)
        return x[:, :, : self.height, : self.width]


class ConditionalGenerator(_UpsamplingGenerator):
    """DCGAN-style conditional image generator: noise + context → image.

    The context conditions the generator twice: its masked mean (``"pooled"``) is
    concatenated to the noise, and the two together scale and shift every block's
    normalised features (FiLM, as BigGAN's conditional batch norm with its hierarchical
    noise, so the noise is not drowned by a strong condition); with ``condition="attention"`` the pixels of the
    blocks at ``attention_resolutions`` also cross-attend the context's tokens (with 2-D
    positions), so individual words ("a dog and a bus") can steer individual regions.
    Each block doubles the resolution with a 4×4 stride-2 transposed convolution; the
    widths halve from ``base_channels · 2^k`` (at most ``max_channels``) to
    ``base_channels``; a 3×3 convolution and ``tanh`` give the output.

    Args:
        dim: width D of the context (the fusion's ``out_dim``).
        image_size: side of the square output, >= 4 (a power of two times 4 avoids a crop).
        channels: output channels (3: RGB).
        z_dim: noise width Z.
        base_channels: width of the last block.
        max_channels: cap on the widths of the first blocks.
        condition: ``"pooled"`` or ``"attention"`` (pooled + cross-attention).
        attention_resolutions: block output sides (the smaller side for non-square
            outputs) that cross-attend, with ``condition="attention"``.
        num_heads: cross-attention heads (reduced to divide a block's width).
        norm: ``"batch"``, ``"group"`` (per-sample, no train/eval difference) or ``"none"``.
        spectral_norm: spectral normalisation of the generator's weights too (SAGAN,
            BigGAN); the discriminator's is :class:`ProjectionDiscriminator`'s option.

    Shapes:
        z: (B, Z); context.x: (B, N, D), context.mask: (B, N) → (B, C, S, S) in [-1, 1]
    """

    def __init__(
        self,
        dim: int,
        image_size: int = 32,
        channels: int = 3,
        z_dim: int = 64,
        base_channels: int = 32,
        max_channels: int = 256,
        condition: str = "pooled",
        attention_resolutions: list[int] = [8, 16],  # noqa: B006 - never mutated; shown by the CLI
        num_heads: int = 4,
        norm: str = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__(
            dim, channels, image_size, image_size, z_dim, base_channels, max_channels,
            condition, list(attention_resolutions), num_heads, norm, spectral_norm,
        )
        self.image_size = image_size


class SpectrogramGenerator(_UpsamplingGenerator):
    """Conditional log-mel spectrogram generator: noise + context → (B, 1, F, M).

    The same network as :class:`ConditionalGenerator`, with a one-channel output of
    ``num_frames × n_mels`` (rows are frames, columns mel bins, values
    :class:`LogMelCodec`'s normalised decibels in [-1, 1]). Sides that are not 4·2^k are
    generated one step larger and cropped.

    Args:
        dim: width D of the context.
        num_frames: F, frames of the spectrogram (time).
        n_mels: M, mel bins.
        z_dim, base_channels, max_channels, condition, attention_resolutions, num_heads,
        norm, spectral_norm: as for :class:`ConditionalGenerator`.

    Shapes:
        z: (B, Z); context.x: (B, N, D), context.mask: (B, N) → (B, 1, F, M) in [-1, 1]
    """

    def __init__(
        self,
        dim: int,
        num_frames: int = 96,
        n_mels: int = 64,
        z_dim: int = 64,
        base_channels: int = 32,
        max_channels: int = 256,
        condition: str = "pooled",
        attention_resolutions: list[int] = [8, 16],  # noqa: B006 - never mutated
        num_heads: int = 4,
        norm: str = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__(
            dim, 1, num_frames, n_mels, z_dim, base_channels, max_channels,
            condition, list(attention_resolutions), num_heads, norm, spectral_norm,
        )
        self.num_frames = num_frames
        self.n_mels = n_mels


class _MinibatchStd(nn.Module):
    """Appends where a batch varies (ProGAN's minibatch standard deviation, kept per position):
    the standard deviation of each feature across a group of samples, averaged over the
    channels, as one more channel at every position. A batch whose pictures all put their
    object in the same place has a low spread there; a real batch does not.

    Groups of ``gcd(group_size, B)`` samples (samples ``i, i + B/G, ...``), the whole batch if
    that is 1; a batch of one sample gets zeros.

    Shapes: (B, C, h, w) → (B, C + 1, h, w)
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        B, C, h, w = x.shape
        G = math.gcd(self.group_size, B)
        G = B if G == 1 else G
        groups = x.float().reshape(G, B // G, C, h, w)  # group j: samples j, j + B/G, ...
        spread = (groups.var(0, unbiased=False) + 1e-8).sqrt().mean(1)  # (B/G, h, w)
        spread = spread.unsqueeze(0).expand(G, -1, -1, -1).reshape(B, 1, h, w).to(x.dtype)
        return torch.cat([x, spread], dim=1)


class ProjectionDiscriminator(nn.Module):
    """Conditional discriminator with a projection head (Miyato & Koyama, 2018).

    Strided 4×4 convolutions with leaky ReLU turn the sample into features, summed over
    space into ``phi`` (B, C_L); the logit is ``w · phi + <embed(c), phi>`` where ``c`` is
    the context's masked mean: the first term judges realism, the second whether the
    sample matches its condition. Any input size works (global sum pooling), as long as
    each side is at least ``2 ** num_layers`` — unless ``position_size`` fixes it and adds
    the position-aware terms ``w_pos · flatten(features) + <embed_pos(c), flatten(features)>``.

    Args:
        dim: width D of the context.
        channels: input channels (3: RGB images, 1: spectrograms).
        base_channels: width of the first convolution; each next one doubles it.
        max_channels: cap on the widths.
        num_layers: stride-2 convolutions (each halves the resolution).
        spectral_norm: spectral normalisation of every weight (SNGAN); the usual choice.
        dropout: dropout on ``phi`` (a small discriminator overfits small data sets).
        vocab_size: with it, an auxiliary linear head on ``phi`` predicts the condition's
            words (AC-GAN on the caption's words; :func:`mmctx.losses.word_classification_loss`,
            used by :class:`~mmctx.trainers.GANTask` with ``word_loss > 0``): a much
            stronger conditional signal than the projection's one scalar. Filled in from
            the data by the CLI.
        position_size: (H, W) of every input, to add a *position-aware* term: a linear
            layer on the flattened final feature map (``C_L·h·w → 1``) and a projection of
            the condition onto every position of that map (``<embed_pos(c), flatten(features)>``),
            both added to the logit. The summed ``phi`` is nearly the same wherever in the
            picture an object sits, so the other terms cannot tell a generator that draws
            every object in the middle from the data's objects in all three thirds (nor "a
            dog and a bus" from "a bus and a dog"); these terms can (docs/gan.md, runs N–S:
            they moved a one-object picture's one place, they did not spread it). None
            (default): off, the translation-invariant discriminator above (any input size).
        minibatch_std: group size of a minibatch-standard-deviation channel (per position,
            :class:`_MinibatchStd`) appended before the last convolution: lets the
            discriminator see how a batch varies — where its objects are, not only what
            each picture shows — against a generator that draws them all in one place
            (docs/gan.md, run P: it did not spread them; 0, default: off).

    Shapes:
        x: (B, C, H, W) ((B, C, *position_size) with ``position_size``); context.x: (B, N, D),
        context.mask: (B, N) → logits (B,), and word logits (B, V) with ``return_words=True``
    """

    def __init__(
        self,
        dim: int,
        channels: int = 3,
        base_channels: int = 32,
        max_channels: int = 256,
        num_layers: int = 3,
        spectral_norm: bool = True,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        position_size: list[int] | None = None,
        minibatch_std: int = 0,
    ) -> None:
        super().__init__()
        if minibatch_std < 0 or minibatch_std == 1:
            raise ValueError(
                f"ProjectionDiscriminator: minibatch_std must be 0 (off) or a group size >= 2, got {minibatch_std}"
            )
        step = 2**num_layers
        if position_size is not None and (
            len(position_size) != 2 or min(position_size) < step or any(side % step for side in position_size)
        ):
            raise ValueError(
                f"ProjectionDiscriminator: position_size must be None or (H, W), each a multiple of "
                f"2**num_layers={2 ** num_layers}, got {position_size}"
            )
        if vocab_size is not None and vocab_size < 1:
            raise ValueError(f"ProjectionDiscriminator: vocab_size must be None or >= 1, got {vocab_size}")
        if num_layers < 1 or channels < 1 or base_channels < 1:
            raise ValueError(
                f"ProjectionDiscriminator: num_layers={num_layers}, channels={channels} and "
                f"base_channels={base_channels} must be >= 1"
            )
        self.dim = dim
        self.channels = channels
        self.num_layers = num_layers
        layers: list[nn.Module] = []
        width_in = channels
        for i in range(num_layers):
            width = min(max_channels, base_channels * 2**i)
            layers += [_sn(nn.Conv2d(width_in, width, 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2)]
            width_in = width
        if minibatch_std:
            layers.append(_MinibatchStd(minibatch_std))
        extra = 1 if minibatch_std else 0
        layers += [_sn(nn.Conv2d(width_in + extra, width_in, 3, 1, 1), spectral_norm), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.feature_dim = width_in
        self.drop = nn.Dropout(dropout)
        self.out = _sn(nn.Linear(width_in, 1), spectral_norm)
        self.embed = _sn(nn.Linear(dim, width_in, bias=False), spectral_norm)
        self.position_size = None if position_size is None else (int(position_size[0]), int(position_size[1]))
        self.position_out = self.position_embed = None
        if self.position_size is not None:
            h, w = (side // 2**num_layers for side in self.position_size)
            self.position_out = _sn(nn.Linear(width_in * h * w, 1), spectral_norm)
            self.position_embed = _sn(nn.Linear(dim, width_in * h * w, bias=False), spectral_norm)
        self.vocab_size = vocab_size
        self.words = None  # on the layer-normalised mean feature: its scale does not depend on the input size
        if vocab_size is not None:
            self.words = nn.Sequential(nn.LayerNorm(width_in), nn.Linear(width_in, vocab_size))

    def logits(self, features: Tensor, cond: Tensor) -> Tensor:
        """The logit of final feature maps and pooled conditions: the summed (projection) terms,
        plus the position-aware ones with ``position_size``.

        Shapes: features (B, C_L, h, w), cond (B, D) → (B,)"""
        phi = self.drop(features.sum(dim=(2, 3)))  # (B, C_L)
        logits = self.out(phi).squeeze(-1) + (self.embed(cond) * phi).sum(-1)  # (B,)
        if self.position_out is not None:
            flat = self.drop(features.flatten(1))  # (B, C_L·h·w): where each feature is, kept
            logits = logits + self.position_out(flat).squeeze(-1) + (self.position_embed(cond) * flat).sum(-1)
        return logits

    def forward(
        self, x: Tensor, context: ExtendedContext, return_words: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Shapes: x (B, C, H, W), context.x (B, N, D), context.mask (B, N) → logits (B,)
        (and word logits (B, V) with ``return_words``)."""
        if return_words and self.words is None:
            raise ValueError("ProjectionDiscriminator: return_words needs vocab_size (the word head)")
        check_shape("discriminator x", x, ("B", self.channels, "H", "W"))
        check_shape("discriminator context.x", context.x, (x.shape[0], "N", self.dim))
        if min(x.shape[-2:]) < 2**self.num_layers:
            raise ValueError(
                f"discriminator x: sides {tuple(x.shape[-2:])} are smaller than 2**num_layers="
                f"{2 ** self.num_layers}"
            )
        if self.position_size is not None and tuple(x.shape[-2:]) != self.position_size:
            raise ValueError(
                f"discriminator x: sides {tuple(x.shape[-2:])} differ from position_size={self.position_size}"
            )
        features = self.features(x)  # (B, C_L, h, w)
        logits = self.logits(features, masked_mean(context.x, context.mask))  # (B,)
        if return_words:
            return logits, self.words(features.mean(dim=(2, 3)))  # (B,), (B, V)
        return logits


class LogMelCodec(nn.Module):
    """Waveform ↔ normalised log-mel spectrogram, the value space of :class:`SpectrogramGenerator`.

    ``encode``: power mel spectrogram (torchaudio) of a fixed ``num_frames`` (the waveform
    is cut or zero-padded to ``(num_frames - 1) · hop_length`` samples), in decibels
    relative to each sample's loudest bin, clipped at ``-top_db`` and scaled to [-1, 1]
    (-1 = silence). ``decode``: the inverse mel filter bank (least squares) and
    Griffin-Lim phase reconstruction (torchaudio), a waveform peak-normalised to 0.9 —
    the loudness is lost with the per-sample reference, the words are not.

    Args:
        sample_rate: waveform sample rate in Hz.
        n_fft: FFT size.
        hop_length: samples between frames.
        n_mels: M, mel bins.
        num_frames: F, frames of every spectrogram.
        top_db: dynamic range kept, in dB.
        griffin_lim_iters: Griffin-Lim iterations of ``decode``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 512,
        n_mels: int = 64,
        num_frames: int = 96,
        top_db: float = 80.0,
        griffin_lim_iters: int = 32,
    ) -> None:
        super().__init__()
        import torchaudio.transforms as T

        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.num_frames = num_frames
        self.top_db = top_db
        self.griffin_lim_iters = griffin_lim_iters
        self.mel = T.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0)
        self.inverse_mel = T.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate)
        self.griffin_lim = T.GriffinLim(n_fft, n_iter=griffin_lim_iters, hop_length=hop_length, power=2.0)

    @property
    def num_samples(self) -> int:
        """Waveform samples that give exactly ``num_frames`` frames."""
        return (self.num_frames - 1) * self.hop_length

    def encode(self, wave: Tensor, mask: Tensor | None = None) -> Tensor:
        """Shapes: wave (B, S), mask (B, S) bool (True at real samples) → (B, 1, F, M) in [-1, 1]."""
        check_shape("LogMelCodec wave", wave, ("B", "S"))
        if mask is not None:
            check_shape("LogMelCodec mask", mask, tuple(wave.shape))
            wave = wave.masked_fill(~mask, 0.0)
        S = self.num_samples
        wave = F.pad(wave, (0, max(0, S - wave.shape[1])))[:, :S]  # (B, S')
        mel = self.mel(wave.float())  # (B, M, F)
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        db = db - db.amax(dim=(1, 2), keepdim=True)  # 0 dB = the sample's loudest bin
        x = db.clamp_min(-self.top_db) / self.top_db * 2.0 + 1.0  # [-1, 1]
        return x.transpose(1, 2).unsqueeze(1).to(wave.dtype)  # (B, 1, F, M)

    @torch.no_grad()
    def decode(self, spec: Tensor) -> Tensor:
        """Shapes: spec (B, 1, F, M) in [-1, 1] → waveform (B, S) at ``sample_rate``."""
        check_shape("LogMelCodec spec", spec, ("B", 1, "F", self.n_mels))
        db = (spec.float().squeeze(1).clamp(-1, 1) - 1.0) / 2.0 * self.top_db  # (B, F, M)
        mel = torch.pow(10.0, db / 10.0).transpose(1, 2)  # (B, M, F) power
        power = self.inverse_mel(mel).clamp_min(0.0)  # (B, n_fft/2+1, F)
        wave = self.griffin_lim(power)  # (B, S)
        return 0.9 * wave / wave.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)
