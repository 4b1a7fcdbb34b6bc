"""The fusion contract checks of tests/fusion/test_contract.py, applied to PerceiverResampler,
plus its own property: a fixed-size output for any input length."""

from __future__ import annotations

import pytest
import torch

from mmctx.fusion import Fusion, PerceiverResampler
from mmctx.types import ExtendedContext, Tokens

DIMS = {"text": 12, "image": 16, "audio": 8}
LENS = {"text": 5, "image": 4, "audio": 7}
LATENTS = 6


@pytest.fixture
def fusion() -> PerceiverResampler:
    torch.manual_seed(0)
    return PerceiverResampler(DIMS, 24, num_latents=LATENTS, num_layers=2, num_heads=4).eval()


def test_is_a_fusion_with_shapes_masks_and_mixed_modality(fusion, make_tokens):
    assert isinstance(fusion, Fusion) and fusion.out_dim == 24
    ctx = fusion(make_tokens(DIMS, LENS))
    assert isinstance(ctx, ExtendedContext)
    assert ctx.x.shape == (3, LATENTS, 24)
    assert ctx.mask.shape == ctx.modality.shape == (3, LATENTS)
    assert ctx.mask.dtype == torch.bool and ctx.mask.all()
    assert ctx.names == ("text", "image", "audio", "mixed")
    assert (ctx.modality == 3).all()
    assert torch.isfinite(ctx.x).all()


@pytest.mark.parametrize("scale", [1, 3, 40])
def test_output_size_does_not_depend_on_input_length(fusion, scale, make_tokens):
    tokens = make_tokens(DIMS, {m: n * scale for m, n in LENS.items()})
    assert fusion(tokens).x.shape == (3, LATENTS, 24)


def test_gradients_reach_every_parameter(fusion, assert_gradients, make_tokens):
    fusion.double()
    ctx = fusion({m: Tokens(t.x.double(), t.mask) for m, t in make_tokens(DIMS, LENS).items()})
    (ctx.x * ctx.mask[..., None]).pow(2).sum().backward()
    assert_gradients(fusion)


def test_padding_values_never_change_real_outputs(fusion, make_tokens):
    tokens = make_tokens(DIMS, LENS)
    ref = fusion(tokens)
    noisy = {m: Tokens(t.x.masked_fill(~t.mask[..., None], 1e3), t.mask) for m, t in tokens.items()}
    out = fusion(noisy)
    torch.testing.assert_close(ref.x[ref.mask], out.x[out.mask], atol=1e-5, rtol=0)
    nan_padded = {m: Tokens(t.x.masked_fill(~t.mask[..., None], float("nan")), t.mask) for m, t in tokens.items()}
    assert torch.isfinite(fusion(nan_padded).x).all()


def test_any_subset_of_modalities(fusion, make_tokens):
    tokens = make_tokens(DIMS, LENS)
    for present in (["text"], ["text", "audio"], ["image", "audio"]):
        ctx = fusion({m: tokens[m] for m in present})
        assert ctx.x.shape == (3, LATENTS, 24)
        assert torch.isfinite(ctx.x).all() and ctx.mask.all()


def test_sample_missing_a_modality_is_handled_by_the_mask(fusion, make_tokens):
    """Sample 1 has no image: its output equals the output computed without the image
    modality at all, and the other samples do not change."""
    tokens = make_tokens(DIMS, LENS)
    img = tokens["image"]
    mask = img.mask.clone()
    mask[1] = False
    missing = {**tokens, "image": Tokens(img.x.clone().index_fill_(0, torch.tensor([1]), 7.0), mask)}
    with_missing = fusion(missing)
    without_image = fusion({m: t for m, t in tokens.items() if m != "image"})
    full = fusion(tokens)
    for b in (0, 2):
        torch.testing.assert_close(with_missing.x[b], full.x[b], atol=1e-5, rtol=0)
    torch.testing.assert_close(with_missing.x[1], without_image.x[1], atol=1e-5, rtol=0)


def test_fully_missing_sample_gives_finite_masked_output(fusion, make_tokens):
    tokens = make_tokens(DIMS, LENS)
    empty = {m: Tokens(t.x, t.mask.clone().index_fill_(0, torch.tensor([2]), False)) for m, t in tokens.items()}
    ctx = fusion(empty)
    assert torch.isfinite(ctx.x).all()
    assert not ctx.mask[2].any() and ctx.mask[:2].all()


def test_bad_inputs_name_the_culprit(fusion, make_tokens):
    tokens = make_tokens(DIMS, LENS)
    with pytest.raises(ValueError, match="unknown modalities \\['video'\\]"):
        fusion({**tokens, "video": tokens["text"]})
    with pytest.raises(ValueError, match="tokens\\['image'\\].x"):
        fusion({**tokens, "image": Tokens(torch.randn(3, 4, 5), tokens["image"].mask)})
    with pytest.raises(ValueError, match="got no modality"):
        fusion({})
    with pytest.raises(ValueError, match="num_latents"):
        PerceiverResampler(DIMS, 24, num_latents=0)
