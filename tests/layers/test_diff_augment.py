"""DiffAugment: seeded draws are reproducible, shapes are kept, each op does what it says,
and the augmentation is differentiable in its input."""

from __future__ import annotations

import pytest
import torch

from mmctx.layers import DiffAugment


def pictures(b: int = 4, size: int = 8) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_a_seed_fixes_the_draw_and_shapes_are_kept():
    aug = DiffAugment(["color", "translation", "cutout"])
    x = pictures()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_translation_shifts_whole_pictures_by_integers_with_edges_replicated():
    aug = DiffAugment(["translation"], translation=0.25)
    x = pictures(b=16)
    y = aug(x, torch.Generator().manual_seed(0))
    for xi, yi in zip(x, y):  # every output is one integer shift of its own input
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = (torch.arange(8) - dy).clamp(0, 7)
                cols = (torch.arange(8) - dx).clamp(0, 7)
                found |= torch.equal(yi, xi[:, rows][:, :, cols])
        assert found
    assert not torch.equal(x, y)


def test_cutout_fills_one_square_per_sample():
    aug = DiffAugment(["cutout"], cutout=0.5, fill=5.0)
    y = aug(pictures(), torch.Generator().manual_seed(0))
    for yi in y:
        cut = (yi == 5.0).all(0)  # (H, W)
        assert cut.sum() == 16  # a 4x4 square
        rows, cols = cut.nonzero().unbind(1)
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3


def test_color_is_per_sample_affine_and_differentiable():
    aug = DiffAugment(["color"])
    x = pictures().requires_grad_(True)
    y = aug(x, torch.Generator().manual_seed(1))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # an empty policy is the identity
    assert torch.equal(DiffAugment([])(x), x)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="blur"):
        DiffAugment(["blur"])
    with pytest.raises(ValueError, match="translation"):
        DiffAugment(translation=0.6)
    with pytest.raises(ValueError, match="shape"):
        DiffAugment()(torch.zeros(3, 8, 8))
