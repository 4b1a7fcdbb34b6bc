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

    def forward(self, x: Tensor, positions: Tensor, seq_dim: int = -2) -> Tensor:
        """Rotate ``x`` by its positions.

        Each channel pair ``(x[2i], x[2i+1])`` is one complex number multiplied by
        ``exp(j·position·inv_freq[i])``: in eager mode one complex product (forward and
        backward) instead of four real products and a stack; under ``torch.compile`` the
        real-valued form, which inductor fuses.

        Args:
            x: queries or keys; the last dim is the head dim, ``seq_dim`` the positions' dim.
            positions: integer or float positions.
            seq_dim: the dimension of ``x`` that ``positions`` index (default -2: the
                ``(B, H, N, D/H)`` layout). Batched ``(B, N)`` positions need ``x.dim() >= 3``
                with the batch in dim 0.

        Shapes:
            x: (B, H, N, D/H) by default, or e.g. (B, N, ..., D/H) with ``seq_dim=1``
            positions: (N,) or (B, N)
            returns: x's shape and dtype
        """
        seq_dim = seq_dim % x.dim()
        angles = positions.to(torch.float32)[..., None] * self.inv_freq  # (B?, N, D/H/2)
        trailing = x.dim() - 1 - seq_dim  # dims between the positions' dim and the head dim
        angles = angles.view(*angles.shape[:-1], *([1] * (trailing - 1)), angles.shape[-1])  # (B?, N, 1.., D/H/2)
        if angles.dim() < x.dim() and positions.dim() == 2 and seq_dim != 1:
            angles = angles.view(angles.shape[0], *([1] * (seq_dim - 1)), *angles.shape[1:])  # (B, 1.., N, .., D/H/2)
        pairs = x.float().unflatten(-1, (-1, 2))  # (..., D/H/2, 2)
        if torch.compiler.is_compiling():
            # compiled: the real-valued form (no complex tensors), which inductor fuses
            x1, x2 = pairs.unbind(-1)
            cos, sin = angles.cos(), angles.sin()
            return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).to(x.dtype)
        rot = torch.polar(torch.ones_like(angles), angles)  # complex exp(j·angle)
        if pairs.stride(-1) != 1 or any(st % 2 for st in pairs.stride()[:-1]) or pairs.storage_offset() % 2:
            pairs = pairs.contiguous()  # view_as_complex needs (re, im) adjacent and even strides
        return torch.view_as_real(torch.view_as_complex(pairs) * rot).flatten(-2).to(x.dtype)
