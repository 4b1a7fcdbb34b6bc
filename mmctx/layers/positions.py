"""Fixed sinusoidal position tables (any length or grid size, nothing to learn)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sincos_1d", "sincos_2d"]


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of positions.

    Shapes:
        positions: (N,) float or int
        returns: (N, dim)
    """
    if dim % 2 != 0:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=positions.device) / dim)
    angles = positions.float()[:, None] * freqs[None, :]  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """2-D sinusoidal embedding of a ``height × width`` grid, row-major.

    Half the channels encode the row, half the column.

    Shapes:
        returns: (height * width, dim)
    """
    if dim % 4 != 0:
        raise ValueError(f"sincos_2d: dim must be divisible by 4, got {dim}")
    rows = torch.arange(height, device=device).repeat_interleave(width)  # (h*w,)
    cols = torch.arange(width, device=device).repeat(height)  # (h*w,)
    return torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=-1)
