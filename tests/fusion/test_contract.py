"""Contract tests run over every fusion module: one signature, shapes, masks, gradients,
padding invariance and missing modalities."""

from __future__ import annotations

import pytest
import torch

from mmctx.fusion import ConcatFusion, CrossAttentionFusion, Fusion, GatedFusion, PerceiverResampler
from mmctx.types import ExtendedContext, Tokens

DIMS = {"text": 12, "image": 16, "audio": 8}
LENS = {"text": 5, "image": 4, "audio": 7}

FUSIONS = {
    "concat": lambda: ConcatFusion(DIMS, 24),
    "cross_attention": lambda: CrossAttentionFusion(DIMS, 24, query_modality="text", num_layers=2, num_heads=4),
    "cross_attention_ungated_append": lambda: CrossAttentionFusion(
        DIMS, 24, query_modality="text", num_heads=2, gated=False, append_context=True
    ),
    "gated": lambda: GatedFusion(DIMS, 24, hidden_dim=16),
    "perceiver": lambda: PerceiverResampler(DIMS, 24, num_latents=3, num_layers=2, num_heads=2),
}


def expected_len(name: str, present: list[str]) -> int:
    if name == "concat":
        return sum(LENS[m] for m in present)
    if name == "cross_attention":
        return LENS["text"]
    if name == "cross_attention_ungated_append":
        return sum(LENS[m] for m in present)
    if name == "perceiver":
        return 3
    return 1


@pytest.fixture(params=sorted(FUSIONS))
def fusion_case(request) -> tuple[str, Fusion]:
    torch.manual_seed(0)
    fusion = FUSIONS[request.param]()
    # gates start at 0 (identity); open them so the tests see the other modalities' effect
    for name, p in fusion.named_parameters():
        if name.endswith("_gate"):
            torch.nn.init.constant_(p, 0.5)
    return request.param, fusion.eval()


def test_shapes_masks_and_modality_ids(fusion_case, make_tokens):
    name, fusion = fusion_case
    tokens = make_tokens(DIMS, LENS)
    ctx = fusion(tokens)
    assert isinstance(ctx, ExtendedContext)
    n = expected_len(name, list(DIMS))
    assert ctx.x.shape == (3, n, 24)
    assert ctx.mask.shape == ctx.modality.shape == (3, n)
    assert ctx.mask.dtype == torch.bool
    assert torch.isfinite(ctx.x).all()
    if name == "concat":
        assert torch.equal(ctx.mask, torch.cat([tokens[m].mask for m in DIMS], 1))
        assert ctx.modality[0].tolist() == [0] * 5 + [1] * 4 + [2] * 7
        assert ctx.names == ("text", "image", "audio")
    if name.startswith("cross_attention"):
        assert torch.equal(ctx.mask[:, : LENS["text"]], tokens["text"].mask)


#: Parameters that cannot get a gradient by construction, per fusion: pattern → why. None so
#: far (GatedFusion's score has no bias because the softmax over modalities ignores it).
DEAD_PARAMETERS: dict[str, dict[str, str]] = {}


def test_gradients_reach_every_parameter(fusion_case, assert_gradients, make_tokens):
    name, fusion = fusion_case
    fusion.double()
    tokens = {m: Tokens(t.x.double(), t.mask) for m, t in make_tokens(DIMS, LENS).items()}
    ctx = fusion(tokens)
    (ctx.x * ctx.mask[..., None]).pow(2).sum().backward()
    assert_gradients(fusion, DEAD_PARAMETERS.get(name))


def test_padding_values_never_change_real_outputs(fusion_case, make_tokens):
    name, fusion = fusion_case
    tokens = make_tokens(DIMS, LENS)
    ref = fusion(tokens)
    noisy = {m: Tokens(t.x.masked_fill(~t.mask[..., None], 1e3), t.mask) for m, t in tokens.items()}
    out = fusion(noisy)
    assert torch.allclose(ref.x[ref.mask], out.x[out.mask], atol=1e-5)


def test_any_subset_of_modalities(fusion_case, make_tokens):
    name, fusion = fusion_case
    tokens = make_tokens(DIMS, LENS)
    for present in (["text"], ["text", "audio"], ["image", "audio"] if not name.startswith("cross") else ["text", "image"]):
        ctx = fusion({m: tokens[m] for m in present})
        assert ctx.x.shape == (3, expected_len(name, present), 24)
        assert torch.isfinite(ctx.x).all()


def test_sample_missing_a_modality_is_handled_by_the_mask(fusion_case, make_tokens):
    """Sample 1 has no image: its image mask row is all False. Its output must equal the
    output computed without the image modality at all, and other samples must not change."""
    name, fusion = fusion_case
    tokens = make_tokens(DIMS, LENS)
    missing = dict(tokens)
    img = tokens["image"]
    mask = img.mask.clone()
    mask[1] = False
    missing["image"] = Tokens(img.x.clone().index_fill_(0, torch.tensor([1]), 7.0), mask)
    with_missing = fusion(missing)
    without_image = fusion({m: t for m, t in tokens.items() if m != "image"})
    full = fusion(tokens)
    # other samples are unaffected by sample 1's missing image
    for b in (0, 2):
        assert torch.allclose(with_missing.x[b][with_missing.mask[b]], full.x[b][full.mask[b]], atol=1e-5)
    # sample 1 sees exactly what it would see with no image modality at all
    a = with_missing.x[1][with_missing.mask[1]]
    b = without_image.x[1][without_image.mask[1]]
    assert torch.allclose(a, b, atol=1e-5)


def test_fully_missing_sample_gives_finite_output(fusion_case, make_tokens):
    name, fusion = fusion_case
    tokens = make_tokens(DIMS, LENS)
    empty = {m: Tokens(t.x, t.mask.clone().index_fill_(0, torch.tensor([2]), False)) for m, t in tokens.items()}
    ctx = fusion(empty)
    assert torch.isfinite(ctx.x).all()
    assert not ctx.mask[2].any()


def test_bad_inputs_name_the_culprit(make_tokens):
    fusion = ConcatFusion(DIMS, 24)
    tokens = make_tokens(DIMS, LENS)
    with pytest.raises(ValueError, match="unknown modalities \\['video'\\]"):
        fusion({**tokens, "video": tokens["text"]})
    with pytest.raises(ValueError, match="tokens\\['image'\\].x"):
        fusion({**tokens, "image": Tokens(torch.randn(3, 4, 5), tokens["image"].mask)})
    with pytest.raises(ValueError, match="got no modality"):
        fusion({})
    with pytest.raises(ValueError, match="query_modality='video'"):
        CrossAttentionFusion(DIMS, 24, query_modality="video")
    with pytest.raises(ValueError, match="query modality 'text' is missing"):
        CrossAttentionFusion(DIMS, 24, query_modality="text")({"image": tokens["image"]})


def test_gated_cross_attention_starts_as_identity_on_the_query_stream(make_tokens):
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(DIMS, 24, query_modality="text", gated=True).eval()
    tokens = make_tokens(DIMS, LENS)
    with_ctx = fusion(tokens)
    alone = fusion({"text": tokens["text"]})
    assert torch.allclose(with_ctx.x, alone.x, atol=1e-6)


def test_gated_fusion_weights_are_a_distribution_over_present_modalities(make_tokens):
    torch.manual_seed(0)
    fusion = GatedFusion(DIMS, 24)
    tokens = make_tokens(DIMS, LENS)
    tokens["audio"] = Tokens(tokens["audio"].x, tokens["audio"].mask.index_fill(0, torch.tensor([0]), False))
    fusion(tokens)
    w = fusion.last_weights
    assert torch.allclose(w.sum(1), torch.ones(3))
    assert w[0, 2] == 0  # sample 0 has no audio


def test_gated_fusion_loads_a_state_dict_with_the_old_score_bias(make_tokens):
    """Before the dead score bias was removed, the gate's last Linear had one; such a state
    dict still loads and gives the same outputs (the bias shifted every score equally)."""
    torch.manual_seed(0)
    fusion = GatedFusion(DIMS, 24, hidden_dim=16).eval()
    old = {**fusion.state_dict(), "gate.2.bias": torch.tensor([3.0])}
    restored = GatedFusion(DIMS, 24, hidden_dim=16).eval()
    restored.load_state_dict(old)  # strict
    tokens = make_tokens(DIMS, LENS)
    torch.testing.assert_close(restored(tokens).x, fusion(tokens).x, atol=0, rtol=0)
    assert fusion.gate[-1].bias is None
