"""Self-attention over the fused extended context: full, or banded with learned global tokens."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from mmctx.layers import TransformerEncoder
from mmctx.types import ExtendedContext, Tokens, check_shape

__all__ = ["ContextEncoder"]

Context = TypeVar("Context", ExtendedContext, Tokens)


class ContextEncoder(nn.Module):
    """Transformer layers over the whole extended context, so tokens of every modality
    attend to each other (after, e.g., :class:`~mmctx.fusion.ConcatFusion`).

    Positions: tokens are numbered 0..N-1 in context order (after the global tokens, if any)
    and rotated with RoPE, so the encoder works at any context length.

    Attention: ``window=None`` (default) is full attention, O(N²). ``window=w``: every token
    attends the tokens within ±w positions of it, O(N·w); the window counts context
    positions, padding included (a fused context may hold one modality's padding between two
    modalities); padding is never attended. ``num_global_tokens`` learned global tokens are
    prepended, attend the whole context and are attended by every token (with a window, the
    band's global positions), so information can travel any distance in two hops; they are
    stripped from the output.

    With ``num_global_tokens=0`` and ``window >= N - 1`` the windowed encoder computes exactly
    what the full-attention one of the same weights computes (same parameter names).

    Args:
        dim: context width D.
        num_layers: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
        window: attention band half-width in context positions, or None for full attention.
        num_global_tokens: learned global tokens prepended to the context (0 for none).
        backend: for a window, ``"blocked"`` (compile-free block-local SDPA) or ``"flex"``
            (compiled ``flex_attention``; see :class:`~mmctx.layers.MultiHeadAttention`).
        checkpoint_blocks: activation checkpointing per block in training (see
            :class:`~mmctx.layers.TransformerEncoder`): less memory, more time.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        window: int | None = None,
        num_global_tokens: int = 0,
        backend: str = "blocked",
        checkpoint_blocks: bool = False,
    ) -> None:
        super().__init__()
        if num_global_tokens < 0:
            raise ValueError(f"ContextEncoder: num_global_tokens must be >= 0, got {num_global_tokens}")
        self.dim = dim
        self.window = window
        self.num_global_tokens = num_global_tokens
        self.global_tokens = nn.Parameter(torch.randn(num_global_tokens, dim) * 0.02) if num_global_tokens else None
        # full attention already lets the global tokens see and be seen by every token
        num_global = num_global_tokens if window is not None else 0
        self.encoder = TransformerEncoder(
            dim, num_layers, num_heads, mlp_ratio, dropout, rope=True, window=window, num_global=num_global,
            backend=backend, checkpoint_blocks=checkpoint_blocks,
        )

    def forward(self, context: Context) -> Context:
        """Re-encode the context.

        Takes an :class:`ExtendedContext` (after a fusion) or one modality's
        :class:`Tokens` (e.g. inside a :class:`~mmctx.context.StackedEncoder`) and returns
        the same type.

        Shapes:
            context.x: (B, N, D), context.mask (and context.modality): (B, N)
            returns: the same type with the same shapes, mask, modality and names
        """
        if not isinstance(context, (ExtendedContext, Tokens)):
            raise TypeError(f"ContextEncoder: expected ExtendedContext or Tokens, got {type(context).__name__}")
        check_shape("ContextEncoder context.x", context.x, ("B", "N", self.dim))
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
