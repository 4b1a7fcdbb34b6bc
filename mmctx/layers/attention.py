"""Multi-head attention over ``F.scaled_dot_product_attention`` with explicit masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmctx.layers.masks import attention_mask
from mmctx.layers.rope import RotaryEmbedding
from mmctx.types import check_shape

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with key-padding masks, optional RoPE and causality.

    Args:
        dim: width of the queries and of the output.
        num_heads: number of heads; ``dim`` must be divisible by it.
        dropout: attention-probability dropout (training only).
        context_dim: width of keys/values for cross-attention (default ``dim``).
        bias: whether the projections have a bias.
        rope: rotate queries and keys by their positions (RoPE).
        rope_base: RoPE wavelength base.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        context_dim: int | None = None,
        bias: bool = True,
        rope: bool = False,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"MultiHeadAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.context_dim = context_dim or dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(self.context_dim, 2 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim, rope_base) if rope else None

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        context_positions: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``x`` to ``context`` (or to ``x`` itself).

        Shapes:
            x: (B, N, D)
            context: (B, M, D_ctx) or None for self-attention (M = N)
            key_mask: (B, M) bool, True at real keys
            attn_mask: (N, M) or (B, N, M) bool, True where query n may attend key m
            positions: (N,) or (B, N) query positions for RoPE (default 0..N-1)
            context_positions: (M,) or (B, M) key positions for RoPE (default 0..M-1)
            returns: (B, N, D); query rows that may attend no key return zeros
        """
        check_shape("MultiHeadAttention x", x, ("B", "N", self.dim))
        source = x if context is None else context
        if context is not None:
            check_shape("MultiHeadAttention context", context, (x.shape[0], "M", self.context_dim))
        if key_mask is not None:
            check_shape("MultiHeadAttention key_mask", key_mask, (x.shape[0], source.shape[1]))
        B, N, _ = x.shape
        M = source.shape[1]
        q = self.q_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D/H)
        k, v = self.kv_proj(source).view(B, M, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 2×(B, H, M, D/H)
        if self.rope is not None:
            q_pos = positions if positions is not None else torch.arange(N, device=x.device)
            k_pos = context_positions if context_positions is not None else (
                q_pos if context is None else torch.arange(M, device=x.device)
            )
            q, k = self.rope(q, q_pos), self.rope(k, k_pos)
        dropout_p = self.dropout if self.training else 0.0
        if is_causal and key_mask is None and attn_mask is None and N == M:
            # plain causal self-attention: let SDPA pick its fused causal kernel
            out, empty = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True), None
        else:
            mask, empty = attention_mask(key_mask, N, attn_mask, is_causal, num_keys=M)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)  # rows with no key to attend: zero, not NaN
        out = out.transpose(1, 2).reshape(B, N, self.dim)  # (B, N, D)
        return self.out_proj(out)
