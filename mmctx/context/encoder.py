"""Self-attention over the fused extended context."""

from __future__ import annotations

import torch
from torch import nn

from mmctx.layers import TransformerEncoder
from mmctx.types import ExtendedContext

__all__ = ["ContextEncoder"]


class ContextEncoder(nn.Module):
    """Transformer layers over the whole extended context, so tokens of every modality
    attend to each other (after, e.g., :class:`~mmctx.fusion.ConcatFusion`).

    Positions: tokens are numbered 0..N-1 in context order and rotated with RoPE, so the
    encoder works at any context length. Full attention costs O(N²); the long-context
    variants (sliding window, memory) live beside this class.

    Args:
        dim: context width D.
        num_layers: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
    """

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.encoder = TransformerEncoder(dim, num_layers, num_heads, mlp_ratio, dropout, rope=True)

    def forward(self, context: ExtendedContext) -> ExtendedContext:
        """Shapes: context.x (B, N, D), context.mask (B, N) → same shapes, re-encoded."""
        positions = torch.arange(context.x.shape[1], device=context.x.device)
        x = self.encoder(context.x, context.mask, positions)  # (B, N, D)
        return ExtendedContext(x, context.mask, context.modality, context.names)
