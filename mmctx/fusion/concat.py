"""Concatenation fusion: every modality's tokens side by side in one long context."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mmctx.fusion.base import Fusion, _ordered
from mmctx.types import ExtendedContext, Tokens

__all__ = ["ConcatFusion"]


class ConcatFusion(Fusion):
    """Project each modality to ``dim``, add a learned modality-type embedding, concatenate.

    The extended context is the concatenation of all present modalities' tokens, in the
    order of ``input_dims``; its mask is the concatenation of their masks. This is the
    "multimodal inputs as extra context" baseline: nothing is compressed or dropped.

    Args:
        input_dims: modality name → token width D_m.
        dim: width D of the fused context.
        dropout: dropout on the fused tokens.
    """

    def __init__(self, input_dims: dict[str, int], dim: int, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})
        self.type_embed = nn.Embedding(len(input_dims), dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: Mapping[str, Tokens]) -> ExtendedContext:
        """Fuse by concatenation.

        Shapes:
            tokens[m].x: (B, N_m, D_m), tokens[m].mask: (B, N_m)
            returns: ExtendedContext with x (B, ΣN_m, D), mask and modality (B, ΣN_m)
        """
        self.check_tokens(tokens)
        xs, masks, ids = [], [], []
        for m, tok in _ordered(self, tokens):
            i = self.modality_id(m)
            type_vec = self.type_embed.weight[i]  # (D,)
            xs.append(self.proj[m](tok.x) + type_vec)  # (B, N_m, D)
            masks.append(tok.mask)
            ids.append(torch.full(tok.mask.shape, i, dtype=torch.long, device=tok.mask.device))
        x = self.drop(self.norm(torch.cat(xs, dim=1)))  # (B, ΣN_m, D)
        return ExtendedContext(x, torch.cat(masks, dim=1), torch.cat(ids, dim=1), self.modalities)
