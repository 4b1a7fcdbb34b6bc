"""PerceiverResampler's own properties: a fixed number of latents for any input length, all of
them real whenever a sample has any token. The shared fusion checks (gradients, padding,
missing modalities, bad inputs) run on it in tests/fusion/test_contract.py."""

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


def test_nan_padding_never_reaches_the_latents(fusion, make_tokens):
    tokens = make_tokens(DIMS, LENS)
    nan_padded = {m: Tokens(t.x.masked_fill(~t.mask[..., None], float("nan")), t.mask) for m, t in tokens.items()}
    torch.testing.assert_close(fusion(nan_padded).x, fusion(tokens).x, atol=1e-6, rtol=0)


def test_latents_are_real_whenever_a_sample_has_a_token(fusion, make_tokens):
    tokens = make_tokens(DIMS, LENS)
    for present in (["text"], ["text", "audio"], ["image", "audio"]):
        ctx = fusion({m: tokens[m] for m in present})
        assert ctx.x.shape == (3, LATENTS, 24) and ctx.mask.all()
    empty = {m: Tokens(t.x, t.mask.clone().index_fill_(0, torch.tensor([2]), False)) for m, t in tokens.items()}
    ctx = fusion(empty)
    assert torch.isfinite(ctx.x).all()
    assert not ctx.mask[2].any() and ctx.mask[:2].all()


def test_num_latents_must_be_positive():
    with pytest.raises(ValueError, match="num_latents"):
        PerceiverResampler(DIMS, 24, num_latents=0)
