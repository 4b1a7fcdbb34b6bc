"""SummaryTokens: max-pooled summaries prepended to the context."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import SummaryTokens
from mmctx.types import ExtendedContext

pytestmark = pytest.mark.usefixtures("one_thread")


def context(lengths=(6, 3, 0), d: int = 8, seed: int = 0) -> ExtendedContext:
    g = torch.Generator().manual_seed(seed)
    N = max(lengths) + 2  # image-like tokens first, then text
    x = torch.randn(len(lengths), N, d, generator=g)
    mask = torch.zeros(len(lengths), N, dtype=torch.bool)
    mask[:, :2] = True
    for b, n in enumerate(lengths):
        mask[b, 2 : 2 + n] = True
    modality = torch.ones(len(lengths), N, dtype=torch.long)
    modality[:, :2] = 0
    return ExtendedContext(x, mask, modality, ("image", "text"))


def test_shapes_names_and_the_summary_is_a_max_over_real_tokens():
    torch.manual_seed(0)
    module = SummaryTokens(8, num_tokens=3)
    c = context()
    out = module(c)
    assert out.x.shape == (3, 3 + c.x.shape[1], 8) and out.names == ("image", "text", "summary")
    assert torch.equal(out.x[:, 3:], c.x) and torch.equal(out.mask[:, 3:], c.mask)
    assert (out.modality[:, :3] == 2).all() and out.mask[:, :3].all()
    h = module.proj(c.x[0, c.mask[0]]).amax(0).view(3, 8)  # (S, D) by hand
    assert torch.allclose(out.x[0, :3], module.norm(h + module.embed), atol=1e-6)


def test_padding_never_changes_the_summaries_and_appending_lower_tokens_never_does():
    torch.manual_seed(0)
    module = SummaryTokens(8, num_tokens=2)
    c = context()
    noisy = ExtendedContext(c.x.masked_fill(~c.mask[..., None], 1e4), c.mask, c.modality, c.names)
    assert torch.equal(module(c).x[:, :2], module(noisy).x[:, :2])
    # a distractor whose projection is below the maximum in every channel changes nothing
    with torch.no_grad():
        module.proj.weight.copy_(torch.eye(8).repeat(2, 1))
        module.proj.bias.zero_()
    low = c.x[:1].amin(1, keepdim=True) - 1.0  # (1, 1, D) below every real token, channel by channel
    longer = ExtendedContext(torch.cat([c.x[:1], low.expand(1, 50, 8)], 1), torch.cat([c.mask[:1], torch.ones(1, 50, dtype=torch.bool)], 1),
                             torch.cat([c.modality[:1], torch.ones(1, 50, dtype=torch.long)], 1), c.names)
    assert torch.equal(module(longer).x[0, :2], module(c).x[0, :2])


def test_one_modality_is_pooled_and_gradients_reach_every_parameter(assert_gradients):
    torch.manual_seed(0)
    module = SummaryTokens(8, num_tokens=2, modality="text").double()
    c = context()
    c = ExtendedContext(c.x.double().requires_grad_(), c.mask, c.modality, c.names)
    out = module(c)
    text_only = ExtendedContext(c.x[:, 2:], c.mask[:, 2:], c.modality[:, 2:], c.names)
    assert torch.allclose(out.x[:2, :2], module(text_only).x[:2, :2])  # the image tokens are not pooled
    assert out.mask[:, :2].tolist() == [[True, True], [True, True], [False, False]]  # row 2 has no text
    assert torch.isfinite(out.x).all()
    weights = torch.randn(out.x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (out.x * weights)[out.mask].sum().backward()  # (a plain sum of LayerNorm outputs is constant)
    assert_gradients(module)
    with pytest.raises(ValueError, match="audio"):
        SummaryTokens(8, modality="audio")(context())
