"""Cross-attention fusion: one modality's tokens attend to all the others (Flamingo-style)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmctx.fusion.base import Fusion, _ordered
from mmctx.layers import FeedForward, MultiHeadAttention
from mmctx.types import ExtendedContext, Tokens

__all__ = ["CrossAttentionFusion", "GatedCrossAttentionBlock"]


class GatedCrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention + feed-forward, each residual and optionally tanh-gated.

    With ``gated=True`` both residual branches are scaled by ``tanh(α)`` with α starting at
    0 (Flamingo, Alayrac et al. 2022), so at initialisation the block is the identity and the
    query stream is not disturbed before the model learns to use the other modalities.

    Args:
        dim: width D of queries and context.
        num_heads: attention heads.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
        gated: use tanh gates initialised to zero.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, gated: bool = True) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), dropout)
        self.gated = gated
        self.attn_gate = nn.Parameter(torch.zeros(1)) if gated else None
        self.ff_gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        """Shapes: x (B, N, D), context (B, M, D), context_mask (B, M) → (B, N, D)."""
        a = self.attn(self.norm_q(x), context=self.norm_kv(context), key_mask=context_mask)
        x = x + (torch.tanh(self.attn_gate) * a if self.attn_gate is not None else a)
        f = self.ff(self.norm_ff(x))
        return x + (torch.tanh(self.ff_gate) * f if self.ff_gate is not None else f)


class CrossAttentionFusion(Fusion):
    """A chosen query modality cross-attends the tokens of all other present modalities.

    The extended context is the query modality's tokens, enriched by ``num_layers`` of
    (gated) cross-attention into the concatenated other modalities; with
    ``append_context=True`` the projected other-modality tokens are appended after them, so
    a head sees both. A sample with no other modality (all keys masked) keeps its query
    tokens unchanged (attention over nothing contributes zero, never NaN).

    Args:
        input_dims: modality name → token width D_m.
        dim: width D of the fused context.
        query_modality: the modality whose tokens become the context's queries; it must be
            present in every call.
        num_layers: cross-attention blocks.
        num_heads: attention heads.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
        gated: tanh gates initialised at 0 (Flamingo); False gives plain residual blocks.
        append_context: also append the other modalities' (projected) tokens.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int,
        query_modality: str,
        num_layers: int = 1,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        gated: bool = True,
        append_context: bool = False,
    ) -> None:
        super().__init__(input_dims, dim)
        if query_modality not in input_dims:
            raise ValueError(
                f"CrossAttentionFusion: query_modality={query_modality!r} is not in input_dims {list(input_dims)}"
            )
        if len(input_dims) < 2:
            raise ValueError("CrossAttentionFusion needs at least two modalities in input_dims")
        self.query_modality = query_modality
        self.append_context = append_context
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})
        self.type_embed = nn.Embedding(len(input_dims), dim)
        self.blocks = nn.ModuleList(
            GatedCrossAttentionBlock(dim, num_heads, mlp_ratio, dropout, gated) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Mapping[str, Tokens]) -> ExtendedContext:
        """Fuse by cross-attention.

        Shapes:
            tokens[m].x: (B, N_m, D_m), tokens[m].mask: (B, N_m)
            returns: ExtendedContext with x (B, N_q, D) — or (B, N_q + ΣN_other, D) with
                ``append_context`` — and matching mask and modality ids
        """
        self.check_tokens(tokens)
        q_name = self.query_modality
        if q_name not in tokens:
            raise ValueError(
                f"CrossAttentionFusion: query modality {q_name!r} is missing from the inputs "
                f"(got {list(tokens)}); use ConcatFusion or a PerceiverResampler when it can be absent"
            )
        q_tok = tokens[q_name]
        q_id = self.modality_id(q_name)
        x = self.proj[q_name](q_tok.x) + self.type_embed.weight[q_id]  # (B, N_q, D)
        others = [(m, t) for m, t in _ordered(self, tokens) if m != q_name]
        ctx_x, ctx_mask, ctx_ids = [], [], []
        for m, tok in others:
            i = self.modality_id(m)
            ctx_x.append(self.proj[m](tok.x) + self.type_embed.weight[i])  # (B, N_m, D)
            ctx_mask.append(tok.mask)
            ctx_ids.append(torch.full(tok.mask.shape, i, dtype=torch.long, device=tok.mask.device))
        q_ids = torch.full(q_tok.mask.shape, q_id, dtype=torch.long, device=q_tok.mask.device)
        if not others:
            # only the query modality is present: nothing to attend to
            return ExtendedContext(self.norm(x), q_tok.mask, q_ids, self.modalities)
        context = torch.cat(ctx_x, dim=1)  # (B, M, D)
        context_mask = torch.cat(ctx_mask, dim=1)  # (B, M)
        for block in self.blocks:
            x = block(x, context, context_mask)
        if not self.append_context:
            return ExtendedContext(self.norm(x), q_tok.mask, q_ids, self.modalities)
        fused = self.norm(torch.cat([x, context], dim=1))  # (B, N_q + M, D)
        return ExtendedContext(
            fused,
            torch.cat([q_tok.mask, context_mask], dim=1),
            torch.cat([q_ids, *ctx_ids], dim=1),
            self.modalities,
        )
