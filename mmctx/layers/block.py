"""Pre-norm transformer blocks and a stack of them."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmctx.layers.attention import MultiHeadAttention

__all__ = ["FeedForward", "TransformerBlock", "TransformerEncoder"]


class FeedForward(nn.Module):
    """Position-wise MLP: Linear → GELU → Dropout → Linear.

    Args:
        dim: input and output width.
        hidden_dim: inner width.
        dropout: dropout after the activation and on the output.
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x (B, N, D) → (B, N, D)."""
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, feed-forward, each residual.

    The self-attention is full, or banded with a ``window`` (see
    :class:`~mmctx.layers.MultiHeadAttention`); the cross-attention is always full.

    Args:
        dim: model width D.
        num_heads: attention heads H.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout in attention and feed-forward.
        cross_attention: add a cross-attention sub-layer into a context.
        context_dim: width of that context (default ``dim``).
        rope: RoPE positions in the self-attention.
        window: self-attention band half-width, or None for full attention.
        num_global: leading positions with global self-attention (needs a ``window``).
        backend: ``"blocked"`` or ``"flex"``, for a windowed self-attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        cross_attention: bool = False,
        context_dim: int | None = None,
        rope: bool = True,
        window: int | None = None,
        num_global: int = 0,
        backend: str = "blocked",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(
            dim, num_heads, dropout=dropout, rope=rope, window=window, num_global=num_global, backend=backend
        )
        self.cross_norm = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attn = (
            MultiHeadAttention(dim, num_heads, dropout=dropout, context_dim=context_dim) if cross_attention else None
        )
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Shapes:
            x: (B, N, D)
            mask: (B, N) bool key-padding mask of ``x``
            context: (B, M, D_ctx), required iff built with ``cross_attention``
            context_mask: (B, M) bool
            positions: (N,) or (B, N) RoPE positions
            returns: (B, N, D)
        """
        x = x + self.drop(self.attn(self.norm1(x), key_mask=mask, is_causal=is_causal, positions=positions))
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("TransformerBlock was built with cross_attention=True but got no context")
            x = x + self.drop(self.cross_attn(self.cross_norm(x), context=context, key_mask=context_mask))
        return x + self.ff(self.norm2(x))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerBlock` (bidirectional) with a final LayerNorm.

    With a ``window`` every block attends a ±``window`` band (plus ``num_global`` global
    positions): O(N·w) per layer instead of O(N²), and the receptive field grows by
    ``window`` per layer (global positions relay information across any distance). With
    ``window >= N - 1`` it computes exactly what the full-attention encoder of the same
    weights computes.

    Args:
        dim: model width D.
        num_layers: number of blocks.
        num_heads: attention heads H.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
        rope: RoPE positions in self-attention.
        window: self-attention band half-width, or None for full attention.
        num_global: leading positions with global self-attention (needs a ``window``).
        backend: ``"blocked"`` or ``"flex"``, for windowed self-attention.
        checkpoint_blocks: activation checkpointing per block (``torch.utils.checkpoint``,
            non-reentrant): in training only each block's input is kept and the block is
            recomputed in the backward pass — activation memory of one block instead of
            all of them, for about one more forward pass of time. Same outputs and
            gradients (dropout masks are replayed); no effect without autograd.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rope: bool = True,
        window: int | None = None,
        num_global: int = 0,
        backend: str = "blocked",
        checkpoint_blocks: bool = False,
    ) -> None:
        super().__init__()
        self.checkpoint_blocks = checkpoint_blocks
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, num_heads, mlp_ratio, dropout, rope=rope, window=window, num_global=num_global, backend=backend
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """Shapes: x (B, N, D), mask (B, N) bool, positions (N,) or (B, N) → (B, N, D)."""
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                x = checkpoint(block, x, mask, None, None, False, positions, use_reentrant=False)
            else:
                x = block(x, mask=mask, positions=positions)
        return self.norm(x)
