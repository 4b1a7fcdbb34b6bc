"""Sliding-window context encoder: banded attention + learned global tokens, O(N·w)."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from mmctx.layers.local_attention import SlidingWindowEncoder
from mmctx.types import ExtendedContext, Tokens, check_shape

__all__ = ["SlidingWindowContextEncoder"]

Context = TypeVar("Context", ExtendedContext, Tokens)


class SlidingWindowContextEncoder(nn.Module):
    """A drop-in for :class:`~mmctx.context.ContextEncoder` whose cost grows linearly with N.

    Every token attends the tokens within ±``window`` positions of it; ``num_global_tokens``
    learned global tokens are prepended, attend the whole context and are attended by every
    token, so information can travel any distance in two hops; they are stripped from the
    output. Positions are the context indices (0..N-1, after the global tokens) rotated with
    RoPE, so the encoder runs at any length. The window counts context positions, padding
    included (a fused context may hold one modality's padding between two modalities); padding
    is never attended.

    With ``num_global_tokens=0`` and ``window >= N - 1`` it computes exactly what a
    :class:`~mmctx.context.ContextEncoder` with the same weights computes (the parameter names
    match, apart from ``global_tokens``).

    Args:
        dim: context width D.
        num_layers: transformer blocks.
        num_heads: attention heads.
        window: attention band half-width, in context positions.
        num_global_tokens: learned global tokens prepended to the context (0 for none).
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
        backend: ``"blocked"`` (compile-free block-local SDPA) or ``"flex"`` (compiled
            ``flex_attention``; see :class:`~mmctx.layers.SlidingWindowAttention`).
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        window: int = 256,
        num_global_tokens: int = 0,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        backend: str = "blocked",
    ) -> None:
        super().__init__()
        if num_global_tokens < 0:
            raise ValueError(f"SlidingWindowContextEncoder: num_global_tokens must be >= 0, got {num_global_tokens}")
        self.dim = dim
        self.window = window
        self.num_global_tokens = num_global_tokens
        self.global_tokens = nn.Parameter(torch.randn(num_global_tokens, dim) * 0.02) if num_global_tokens else None
        self.encoder = SlidingWindowEncoder(
            dim, num_layers, num_heads, window, num_global=num_global_tokens, mlp_ratio=mlp_ratio,
            dropout=dropout, rope=True, backend=backend,
        )

    def forward(self, context: Context) -> Context:
        """Re-encode the context with banded attention.

        Takes an :class:`ExtendedContext` (after a fusion) or one modality's
        :class:`Tokens` (e.g. inside a :class:`~mmctx.context.StackedEncoder`) and returns
        the same type.

        Shapes:
            context.x: (B, N, D), context.mask (and context.modality): (B, N)
            returns: the same type with the same shapes, mask, modality and names
        """
        if not isinstance(context, (ExtendedContext, Tokens)):
            raise TypeError(
                f"SlidingWindowContextEncoder: expected ExtendedContext or Tokens, got {type(context).__name__}"
            )
        check_shape("SlidingWindowContextEncoder context.x", context.x, ("B", "N", self.dim))
        B, N, D = context.x.shape
        G = self.num_global_tokens
        x, mask = context.x, context.mask
        if self.global_tokens is not None:
            x = torch.cat([self.global_tokens.to(x.dtype).expand(B, G, D), x], dim=1)  # (B, G+N, D)
            mask = torch.cat([mask.new_ones(B, G), mask], dim=1)  # (B, G+N)
        positions = torch.arange(G + N, device=x.device)  # (G+N,)
        x = self.encoder(x, mask, positions)[:, G:]  # (B, N, D)
        if isinstance(context, Tokens):
            return Tokens(x, context.mask)
        return ExtendedContext(x, context.mask, context.modality, context.names)

    def extra_repr(self) -> str:
        return f"window={self.window}, num_global_tokens={self.num_global_tokens}"
