"""Rotary position embedding (RoPE, Su et al. 2021): relative positions through rotation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RotaryEmbedding"]


class RotaryEmbedding(nn.Module):
    """Rotates pairs of channels of queries/keys by an angle proportional to their position.

    The dot product of a rotated query at position i and a rotated key at position j depends
    only on ``i - j``, which makes attention position-relative and lets a model run on
    sequences longer than those it was trained on (positions are computed, not learned).

    Args:
        head_dim: width of one attention head (must be even).
        base: the wavelength base; larger values stretch the usable context.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` by its positions.

        Shapes:
            x: (B, H, N, D/H)
            positions: (N,) or (B, N) integer or float positions
            returns: (B, H, N, D/H), same dtype as ``x``
        """
        angles = positions.to(torch.float32)[..., None] * self.inv_freq  # (B?, N, D/H/2)
        if angles.dim() == 3:
            angles = angles[:, None]  # (B, 1, N, D/H/2): broadcast over heads
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # each (B, H, N, D/H/2)
        rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return rotated.flatten(-2).to(x.dtype)
