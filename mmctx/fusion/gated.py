"""Gated fusion: a learned, input-dependent weighted sum of pooled modality vectors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mmctx.fusion.base import Fusion, _ordered
from mmctx.layers import masked_mean
from mmctx.types import ExtendedContext, Tokens

__all__ = ["GatedFusion"]


class GatedFusion(Fusion):
    """Pool each modality, project to ``dim``, and mix them with softmax gates.

    Each present modality m gives a vector h_m (masked mean of its tokens, projected); a
    gate network scores every h_m, the scores are softmax-normalised over the modalities
    that are present *for that sample*, and the context is the single token Σ w_m h_m.
    Cheapest fusion; it keeps no sequence, so it suits classification rather than
    generation.

    Args:
        input_dims: modality name → token width D_m.
        dim: width D of the fused vector.
        hidden_dim: width of the gate network's hidden layer.
        dropout: dropout on the fused vector.
    """

    def __init__(self, input_dims: dict[str, int], dim: int, hidden_dim: int = 64, dropout: float = 0.0) -> None:
        super().__init__(input_dims, dim)
        self.proj = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dim)) for m, d in input_dims.items()}
        )
        # no bias on the score: the softmax over modalities is invariant to a shift shared by
        # every modality, so such a bias would never get a gradient
        self.gate = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 1, bias=False))
        self.drop = nn.Dropout(dropout)
        self.last_weights: torch.Tensor | None = None

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        # State dicts saved before the score's bias was removed carry ``gate.2.bias``; it only
        # shifted every modality's score by the same amount, so dropping it changes no output.
        state_dict.pop(f"{prefix}gate.2.bias", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, tokens: Mapping[str, Tokens]) -> ExtendedContext:
        """Fuse by a gated weighted sum.

        Shapes:
            tokens[m].x: (B, N_m, D_m), tokens[m].mask: (B, N_m)
            returns: ExtendedContext with x (B, 1, D), mask (B, 1) — False for a sample with
                no modality at all — and modality (B, 1) pointing at the name ``"mixed"``
        """
        self.check_tokens(tokens)
        present = _ordered(self, tokens)
        pooled = torch.stack([self.proj[m](masked_mean(t.x, t.mask)) for m, t in present], dim=1)  # (B, M, D)
        has = torch.stack([t.mask.any(dim=1) for _, t in present], dim=1)  # (B, M)
        scores = self.gate(pooled).squeeze(-1).masked_fill(~has, float("-inf"))  # (B, M)
        any_present = has.any(dim=1, keepdim=True)  # (B, 1)
        weights = torch.softmax(scores.masked_fill(~any_present, 0.0), dim=1) * has  # (B, M)
        self.last_weights = weights.detach()
        fused = self.drop((weights.unsqueeze(-1) * pooled).sum(dim=1, keepdim=True))  # (B, 1, D)
        modality = torch.full_like(any_present, len(self.modalities), dtype=torch.long)
        return ExtendedContext(fused, any_present, modality, (*self.modalities, "mixed"))
