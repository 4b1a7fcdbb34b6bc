"""GAN heads: output shapes and ranges (image and spectrogram), masking, gradients,
spectral norm, the log-mel codec's round trip, and errors that name the bad argument."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from mmctx.heads import ConditionalGenerator, LogMelCodec, ProjectionDiscriminator, SpectrogramGenerator
from mmctx.types import ExtendedContext

D = 16


def context(B: int = 3, N: int = 5, seed: int = 0) -> ExtendedContext:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 3:] = False  # sample 0 has two padding tokens
    return ExtendedContext(torch.randn(B, N, D, generator=g), mask, torch.zeros(B, N, dtype=torch.long), ("text",))


@pytest.mark.parametrize("condition", ["pooled", "attention"])
@pytest.mark.parametrize("size,channels", [(8, 3), (16, 1), (32, 3)])
def test_image_generator_and_discriminator_shapes(condition, size, channels):
    torch.manual_seed(0)
    gen = ConditionalGenerator(D, image_size=size, channels=channels, z_dim=8, base_channels=4,
                               condition=condition, attention_resolutions=[8], num_heads=2)
    disc = ProjectionDiscriminator(D, channels=channels, base_channels=4, num_layers=2)
    ctx = context()
    x = gen(torch.randn(3, 8), ctx)
    assert x.shape == (3, channels, size, size) == (3, *gen.output_shape)
    assert x.abs().max() <= 1.0
    assert disc(x, ctx).shape == (3,)
    assert gen.num_upsamples == int(math.log2(size // 4))


def test_spectrogram_generator_crops_to_frames_by_mels():
    torch.manual_seed(0)
    gen = SpectrogramGenerator(D, num_frames=24, n_mels=10, z_dim=8, base_channels=4)
    # 4 · 2^k >= min(24, 10) → k = 2, a (6, 3) seed map grows to (24, 12), cropped to (24, 10)
    assert gen.num_upsamples == 2 and gen.start == (6, 3)
    spec = gen(torch.randn(3, 8), context())
    assert spec.shape == (3, 1, 24, 10)
    disc = ProjectionDiscriminator(D, channels=1, base_channels=4, num_layers=3)
    assert disc(spec, context()).shape == (3,)


def test_padding_tokens_never_change_the_outputs():
    torch.manual_seed(0)
    gen = ConditionalGenerator(D, image_size=16, z_dim=8, base_channels=4, condition="attention",
                               attention_resolutions=[8, 16], num_heads=2).eval()
    disc = ProjectionDiscriminator(D, base_channels=4, num_layers=2).eval()
    with torch.no_grad():
        # the FiLM layers start at zero (a plain DCGAN block): give them weights so the
        # condition matters and the test can see a leak
        for block in gen.blocks:
            block.film.weight.normal_(0, 0.5)
    ctx, z = context(), torch.randn(3, 8)
    poked = ExtendedContext(ctx.x.clone(), ctx.mask, ctx.modality, ctx.names)
    poked.x[0, 3:] = 100.0  # padding of sample 0
    other = ExtendedContext(ctx.x.clone(), ctx.mask, ctx.modality, ctx.names)
    other.x[0, 0] += 1.0  # a real token of sample 0
    x = gen(z, ctx)
    assert torch.allclose(gen(z, poked), x, atol=1e-6)
    assert not torch.allclose(gen(z, other)[0], x[0], atol=1e-4)  # real tokens do condition
    assert torch.allclose(gen(z, other)[1:], x[1:], atol=1e-6)  # and only their own sample
    assert torch.allclose(disc(x, poked), disc(x, ctx), atol=1e-5)
    assert not torch.allclose(disc(x, other)[0], disc(x, ctx)[0])


def test_gradients_reach_every_parameter(assert_gradients):
    torch.manual_seed(0)
    gen = ConditionalGenerator(D, image_size=16, z_dim=8, base_channels=4, condition="attention",
                               attention_resolutions=[8, 16], num_heads=2, spectral_norm=True).double()
    disc = ProjectionDiscriminator(D, base_channels=4, num_layers=2).double()
    positional = ProjectionDiscriminator(D, base_channels=4, num_layers=2, position_size=[16, 16]).double()
    spread = ProjectionDiscriminator(D, base_channels=4, num_layers=2, minibatch_std=3).double()
    c = context()
    c = ExtendedContext(c.x.double(), c.mask, c.modality, c.names)
    x = gen(torch.randn(3, 8, dtype=torch.float64), c)
    (disc(x, c).sum() + positional(x, c).sum() + spread(x, c).sum()).backward()
    assert_gradients(gen)
    assert_gradients(disc)
    assert_gradients(positional)  # the position terms' weights too
    assert_gradients(spread)  # and the last convolution's weights of the spread channel


def test_minibatch_std_channel_sees_where_a_batch_varies():
    """The spread channel is zero where a group's samples agree and positive where they differ;
    with it a sample's logit depends on the rest of its batch (without it, never). Off by
    default: the old layers."""
    from mmctx.heads.gan import _MinibatchStd

    x = torch.zeros(4, 2, 3, 3)
    x[:, :, 1, 2] = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1)  # the samples differ at one position
    out = _MinibatchStd(4)(x)
    assert out.shape == (4, 3, 3, 3) and torch.equal(out[:, :2], x)
    spread = out[:, 2]  # (4, 3, 3): the same map for the whole group
    assert spread[:, 1, 2].allclose(torch.tensor(1.25).sqrt().expand(4), atol=1e-4)  # std of 0, 1, 2, 3
    assert spread.flatten(1)[:, [0, 1, 2, 3, 4, 6, 7, 8]].abs().max() < 1e-3
    halves = _MinibatchStd(2)(x)[:, 2, 1, 2]  # groups {0, 2} and {1, 3}: std 1 each
    assert halves.allclose(torch.ones(4), atol=1e-4)
    torch.manual_seed(0)
    plain = ProjectionDiscriminator(D, base_channels=4, num_layers=2).eval()
    assert len(plain.features) == 2 * 2 + 2  # 2 strided convs + the last conv, each with its activation
    disc = ProjectionDiscriminator(D, base_channels=4, num_layers=2, minibatch_std=4).eval()
    pics, ctx = torch.randn(4, 3, 16, 16), context(B=4)
    varied = pics.clone()
    varied[1:] = torch.randn(3, 3, 16, 16)  # sample 0 unchanged, its batch-mates changed
    with torch.no_grad():
        assert torch.allclose(plain(pics, ctx)[0], plain(varied, ctx)[0], atol=1e-6)
        assert not torch.allclose(disc(pics, ctx)[0], disc(varied, ctx)[0], atol=1e-4)


def test_position_terms_see_where_the_features_are():
    """The summed projection discriminator gives a feature map and the same map shifted the
    same logit (it cannot tell an object in the middle from one on the left); with
    position_size the flattened terms see the shift. Off by default: the old parameters and
    logits, any input size."""
    torch.manual_seed(0)
    plain = ProjectionDiscriminator(D, base_channels=4, num_layers=2)
    assert plain.position_out is None and plain.position_embed is None
    assert {n.split(".")[0] for n, _ in plain.named_parameters()} == {"features", "out", "embed"}
    torch.manual_seed(0)
    disc = ProjectionDiscriminator(D, base_channels=4, num_layers=2, position_size=[16, 8])
    assert disc.position_out.in_features == disc.feature_dim * 4 * 2  # the (16, 8) input's (4, 2) map
    assert disc.position_embed.out_features == disc.feature_dim * 4 * 2
    ctx = context()
    cond = ctx.x.mean(1)  # (B, D): no padding in samples 1, 2
    features = torch.randn(3, disc.feature_dim, 4, 2)
    shifted = features.roll(1, dims=2)  # the same features, one row lower
    plain.eval(), disc.eval()  # no power iteration between the calls compared
    with torch.no_grad():
        assert torch.allclose(plain.logits(features, cond), plain.logits(shifted, cond), atol=1e-5)
        assert not torch.allclose(disc.logits(features, cond), disc.logits(shifted, cond), atol=1e-3)
        # the position terms are added to the summed ones (same initial weights from the same seed)
        phi = features.sum(dim=(2, 3))
        flat = features.flatten(1)
        expected = (disc.out(phi).squeeze(-1) + (disc.embed(cond) * phi).sum(-1)
                    + disc.position_out(flat).squeeze(-1) + (disc.position_embed(cond) * flat).sum(-1))
        assert torch.allclose(disc.logits(features, cond), expected, atol=1e-5)
        x = torch.randn(3, 3, 16, 8)
        assert torch.allclose(disc(x, ctx), disc.logits(disc.features(x), masked_mean_of(ctx)), atol=1e-5)
    assert plain(torch.randn(3, 3, 12, 20), ctx).shape == (3,)  # off: any size
    with pytest.raises(ValueError, match="position_size"):
        disc(torch.randn(3, 3, 16, 16), ctx)


def masked_mean_of(ctx: ExtendedContext) -> torch.Tensor:
    m = ctx.mask.unsqueeze(-1).float()
    return (ctx.x * m).sum(1) / m.sum(1)


def test_spectral_norm_option_bounds_the_discriminators_layers():
    torch.manual_seed(0)
    disc = ProjectionDiscriminator(D, base_channels=4, num_layers=2, spectral_norm=True)
    plain = ProjectionDiscriminator(D, base_channels=4, num_layers=2, spectral_norm=False)
    assert parametrize.is_parametrized(disc.out, "weight") and parametrize.is_parametrized(disc.embed, "weight")
    assert not parametrize.is_parametrized(plain.out, "weight")
    disc.train()
    for _ in range(20):  # power iterations run in training-mode forwards
        disc(torch.randn(2, 3, 8, 8), context(2))
    disc.eval()
    weight = disc.embed.weight  # (C_L, D), normalised by its largest singular value
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=0.05)
    with torch.no_grad():
        plain.embed.weight.mul_(50.0)
    assert torch.linalg.matrix_norm(plain.embed.weight, ord=2).item() > 2.0


def test_log_mel_codec_range_frames_and_round_trip():
    torch.manual_seed(0)
    codec = LogMelCodec(sample_rate=8000, n_fft=256, hop_length=128, n_mels=20, num_frames=32, griffin_lim_iters=32)
    t = torch.arange(2000) / 8000
    tone = torch.stack([torch.sin(2 * math.pi * 440 * t), torch.sin(2 * math.pi * 1500 * t)])  # (2, 2000)
    mask = torch.ones_like(tone, dtype=torch.bool)
    mask[1, 1000:] = False  # the second clip is half as long
    spec = codec.encode(tone, mask)
    assert spec.shape == (2, 1, 32, 20)
    assert spec.min() >= -1.0 and spec.max() == 1.0
    # beyond the clip (2000 samples ≈ 15.6 frames; 1000 for the second) is silence: -1
    assert (spec[0, 0, 18:] == -1.0).all() and (spec[1, 0, 10:] == -1.0).all()
    # the two tones put their energy in different mel bins
    assert spec[0, 0, 4].argmax() < spec[1, 0, 4].argmax()
    wave = codec.decode(spec)
    assert wave.shape == (2, codec.num_samples) and wave.abs().max() <= 0.9 + 1e-5
    again = codec.encode(wave)  # inverse mel + Griffin-Lim keep each frame's loudest mel bin
    assert torch.equal(again[0, 0, 2:14].argmax(-1), spec[0, 0, 2:14].argmax(-1))
    assert torch.equal(again[1, 0, 2:7].argmax(-1), spec[1, 0, 2:7].argmax(-1))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="condition"):
        ConditionalGenerator(D, condition="film")
    with pytest.raises(ValueError, match="norm"):
        ConditionalGenerator(D, norm="layer")
    with pytest.raises(ValueError, match="at least 4x4"):
        SpectrogramGenerator(D, num_frames=2, n_mels=16)
    gen = ConditionalGenerator(D, image_size=8, z_dim=8, base_channels=4)
    with pytest.raises(ValueError, match="generator z"):
        gen(torch.randn(3, 7), context())
    disc = ProjectionDiscriminator(D, base_channels=4, num_layers=3)
    with pytest.raises(ValueError, match="2\\*\\*num_layers"):
        disc(torch.randn(3, 3, 4, 4), context())
    with pytest.raises(ValueError, match="discriminator x"):
        disc(torch.randn(3, 1, 8, 8), context())
    for bad in (1, -2):
        with pytest.raises(ValueError, match="minibatch_std"):
            ProjectionDiscriminator(D, minibatch_std=bad)
    for bad in ([32], [30, 32], [4, 32]):  # (H, W), each a multiple of 2**num_layers = 8, >= 8
        with pytest.raises(ValueError, match="position_size"):
            ProjectionDiscriminator(D, base_channels=4, num_layers=3, position_size=bad)


def test_discriminator_word_head_learns_which_object_a_picture_shows():
    """The auxiliary word head (AC-GAN on the caption's words) reads the layer-normalised mean
    feature: a few steps tell a red square on the left from a blue one on the right, at any
    input size (its scale does not shrink with the picture's pixel count)."""
    from mmctx.losses import word_classification_loss

    for size in (16, 32):
        torch.manual_seed(0)
        disc = ProjectionDiscriminator(D, base_channels=8, num_layers=3, vocab_size=4)
        x = -torch.ones(8, 3, size, size)
        q = size // 4
        x[:4, 0, q : 2 * q, :q] = 1.0  # red, left: word 1
        x[4:, 2, q : 2 * q, -q:] = 1.0  # blue, right: word 3
        targets = torch.zeros(8, 4)
        targets[:4, 1] = 1.0
        targets[4:, 3] = 1.0
        opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
        ctx = context(B=8)
        logits, words = disc(x, ctx, return_words=True)
        assert logits.shape == (8,) and words.shape == (8, 4)
        for _ in range(60):
            loss = word_classification_loss(disc(x, ctx, return_words=True)[1], targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.1 * math.log(4), size
    with pytest.raises(ValueError, match="vocab_size"):
        ProjectionDiscriminator(D)(x, ctx, return_words=True)
