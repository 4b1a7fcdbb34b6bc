"""Perceiver resampler: a fixed number of learned latents summarise every modality's tokens."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmctx.fusion.base import Fusion, _ordered
from mmctx.layers import FeedForward, MultiHeadAttention
from mmctx.types import ExtendedContext, Tokens

__all__ = ["PerceiverResampler", "PerceiverBlock"]


class PerceiverBlock(nn.Module):
    """One resampler layer: latents cross-attend [inputs; latents], then a feed-forward.

    As in Flamingo (Alayrac et al. 2022), keys and values are the concatenation of the input
    tokens and the latents themselves, so a latent can also keep or exchange what it holds.

    Args:
        dim: width D of latents and inputs.
        num_heads: attention heads.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), dropout)

    def forward(self, latents: Tensor, inputs: Tensor, input_mask: Tensor) -> Tensor:
        """Shapes: latents (B, L, D), inputs (B, M, D), input_mask (B, M) bool → (B, L, D)."""
        lat = self.norm_latents(latents)  # (B, L, D)
        kv = torch.cat([self.norm_inputs(inputs), lat], dim=1)  # (B, M+L, D)
        kv_mask = torch.cat([input_mask, input_mask.new_ones(lat.shape[:2])], dim=1)  # (B, M+L)
        latents = latents + self.attn(lat, context=kv, key_mask=kv_mask)
        return latents + self.ff(self.norm_ff(latents))


class PerceiverResampler(Fusion):
    """Compress all present modalities into ``num_latents`` tokens, whatever their lengths.

    Each modality's tokens are projected to ``dim`` and tagged with a learned modality-type
    embedding; the present modalities are concatenated (in ``input_dims`` order) and
    ``num_layers`` :class:`PerceiverBlock` let ``num_latents`` learned latents cross-attend
    them. The extended context is the latents: its size is fixed, so a long audio or document
    costs the head nothing more (the resampler itself is O(N·num_latents)). Every latent mixes
    all modalities, so — as for :class:`~mmctx.fusion.GatedFusion` — ``modality`` points at
    the extra name ``"mixed"``, and the mask is True unless the sample has no real token in
    any modality (then its latents are finite but masked out). Padding and a missing modality
    are masked keys, never data.

    Args:
        input_dims: modality name → token width D_m.
        dim: width D of the latents (the fused context).
        num_latents: number of output tokens.
        num_layers: resampler blocks.
        num_heads: attention heads.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int,
        num_latents: int = 16,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_dims, dim)
        if num_latents < 1:
            raise ValueError(f"PerceiverResampler: num_latents must be >= 1, got {num_latents}")
        if num_layers < 1:
            raise ValueError(f"PerceiverResampler: num_layers must be >= 1, got {num_layers}")
        self.num_latents = num_latents
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})
        self.type_embed = nn.Embedding(len(input_dims), dim)
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.blocks = nn.ModuleList(PerceiverBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Mapping[str, Tokens]) -> ExtendedContext:
        """Resample the present modalities to ``num_latents`` tokens.

        Shapes:
            tokens[m].x: (B, N_m, D_m), tokens[m].mask: (B, N_m)
            returns: ExtendedContext with x (B, num_latents, D), mask (B, num_latents) — False
                for a sample with no token at all — and modality (B, num_latents) pointing at
                the name ``"mixed"``
        """
        B = self.check_tokens(tokens)
        xs, masks = [], []
        for m, tok in _ordered(self, tokens):
            x = self.proj[m](tok.x) + self.type_embed.weight[self.modality_id(m)]  # (B, N_m, D)
            xs.append(x.masked_fill(~tok.mask[..., None], 0.0))  # padding values never enter
            masks.append(tok.mask)
        inputs = torch.cat(xs, dim=1)  # (B, ΣN_m, D)
        input_mask = torch.cat(masks, dim=1)  # (B, ΣN_m)
        latents = self.latents.to(inputs.dtype).expand(B, -1, -1)  # (B, L, D)
        for block in self.blocks:
            latents = block(latents, inputs, input_mask)
        any_token = input_mask.any(dim=1, keepdim=True).repeat(1, self.num_latents)  # (B, L)
        modality = torch.full((B, self.num_latents), len(self.modalities), dtype=torch.long, device=inputs.device)
        return ExtendedContext(self.norm(latents), any_token, modality, (*self.modalities, "mixed"))

    def extra_repr(self) -> str:
        return f"num_latents={self.num_latents}"
