"""ChunkMaxPool: one modality's tokens max-pooled a chunk at a time."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import ChunkMaxPool
from mmctx.types import ExtendedContext

pytestmark = pytest.mark.usefixtures("one_thread")


def context(text_lengths=(37, 20, 0), num_image: int = 4, d: int = 8, seed: int = 0) -> ExtendedContext:
    """Image-like tokens first (all real), then a text block padded to the longest row."""
    g = torch.Generator().manual_seed(seed)
    T = max(text_lengths)
    x = torch.randn(len(text_lengths), num_image + T, d, generator=g)
    mask = torch.ones(len(text_lengths), num_image + T, dtype=torch.bool)
    for b, n in enumerate(text_lengths):
        mask[b, num_image + n :] = False
    modality = torch.zeros_like(mask, dtype=torch.long)
    modality[:, num_image:] = 1
    return ExtendedContext(x, mask, modality, ("image", "text"))


def test_shapes_masks_and_each_chunk_is_the_max_of_its_real_tokens():
    torch.manual_seed(0)
    pool = ChunkMaxPool(8, chunk=16)
    c = context()
    out = pool(c)
    assert out.x.shape == (3, 4 + 3, 8) and out.names == c.names  # 37 tokens -> 3 chunks
    assert torch.equal(out.x[:, :4], c.x[:, :4])  # the image tokens pass unchanged
    assert out.mask[:, 4:].tolist() == [[True, True, True], [True, True, False], [False, False, False]]
    assert (out.modality[:, 4:] == 1).all() and (out.modality[:, :4] == 0).all()
    by_hand = pool.norm(pool.proj(c.x[1, 4 + 16 : 4 + 20]).amax(0))  # row 1, chunk 1: its 4 real tokens
    assert torch.allclose(out.x[1, 5], by_hand, atol=1e-6)
    assert (out.x[2, 4:] == 0).all() and torch.isfinite(out.x).all()


def test_padding_never_changes_a_row_and_lower_tokens_in_a_chunk_never_do():
    torch.manual_seed(0)
    pool = ChunkMaxPool(8, chunk=16)
    c = context()
    alone = ExtendedContext(c.x[1:2, : 4 + 20], c.mask[1:2, : 4 + 20], c.modality[1:2, : 4 + 20], c.names)
    assert torch.equal(pool(alone).x[0], pool(c).x[1, :6])
    noisy = ExtendedContext(c.x.masked_fill(~c.mask[..., None], 1e4), c.mask, c.modality, c.names)
    assert torch.equal(pool(noisy).x, pool(c).x)
    with torch.no_grad():
        pool.proj.weight.copy_(torch.eye(8))
        pool.proj.bias.zero_()
    one = context((5,))  # one chunk of 5 real tokens; add 11 tokens below every channel's maximum
    low = one.x[:, 4:].amin(1, keepdim=True) - 1.0
    filled = ExtendedContext(torch.cat([one.x, low.expand(1, 11, 8)], 1), torch.ones(1, 20, dtype=torch.bool),
                             torch.cat([one.modality, torch.ones(1, 11, dtype=torch.long)], 1), one.names)
    assert torch.equal(pool(filled).x, pool(one).x)


def test_gradients_reach_every_parameter_and_errors_name_the_input(assert_gradients):
    torch.manual_seed(0)
    pool = ChunkMaxPool(8, chunk=4).double()
    c = context()
    c = ExtendedContext(c.x.double(), c.mask, c.modality, c.names)
    out = pool(c)
    weights = torch.randn(out.x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (out.x * weights)[out.mask].sum().backward()
    assert_gradients(pool)
    with pytest.raises(ValueError, match="audio"):
        ChunkMaxPool(8, modality="audio")(context())
    mixed = context()
    mixed.modality[:, 2] = 1  # a text token inside the image block
    with pytest.raises(ValueError, match="contiguous"):
        ChunkMaxPool(8)(mixed)
    with pytest.raises(ValueError, match="chunk"):
        ChunkMaxPool(8, chunk=0)
