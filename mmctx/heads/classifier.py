"""Classification head over an extended context."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmctx.layers import MultiHeadAttention, masked_mean
from mmctx.types import ExtendedContext

__all__ = ["ClassifierHead"]

_POOLINGS = ("mean", "attention", "max")


class ClassifierHead(nn.Module):
    """Pool the context's real tokens and map them to class logits.

    Args:
        dim: width D of the context.
        num_classes: K. Left unset in YAML configs: the CLI fills it from the data module.
        pooling: ``"mean"`` (masked mean) or ``"attention"`` (a learned query attends the
            context, so the head can pick out the tokens that matter) or ``"max"`` (masked
            max over the real tokens, per channel: unlike a softmax, it does not dilute one
            relevant token among more distractors as the context grows, so a head trained on
            short contexts reads long ones the same way; see docs/long_context.md).
        hidden_dim: width of a hidden layer (0: a single linear layer).
        num_heads: heads of the attention pooling.
        dropout: dropout before the output layer.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int | None = None,
        pooling: str = "mean",
        hidden_dim: int = 0,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes is None or num_classes < 2:
            raise ValueError(
                f"ClassifierHead: num_classes must be an int >= 2, got {num_classes!r} "
                "(from the CLI it is filled in from the data module)"
            )
        if pooling not in _POOLINGS:
            raise ValueError(f"ClassifierHead: pooling must be one of {_POOLINGS}, got {pooling!r}")
        self.dim = dim
        self.num_classes = num_classes
        self.pooling = pooling
        if pooling == "attention":
            self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
            self.attn = MultiHeadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)
        layers: list[nn.Module] = []
        if hidden_dim > 0:
            layers += [nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes)]
        else:
            layers += [nn.Dropout(dropout), nn.Linear(dim, num_classes)]
        self.mlp = nn.Sequential(*layers)

    def pool(self, context: ExtendedContext) -> Tensor:
        """Shapes: context.x (B, N, D) → (B, D); a sample with no real token pools to zeros."""
        if self.pooling == "mean":
            return masked_mean(context.x, context.mask)
        if self.pooling == "max":
            x = context.x.masked_fill(~context.mask[..., None], float("-inf")).amax(dim=1)  # (B, D)
            return x.masked_fill(~context.mask.any(dim=1, keepdim=True), 0.0)
        query = self.query.expand(context.x.shape[0], -1, -1)  # (B, 1, D)
        return self.attn(query, context=context.x, key_mask=context.mask).squeeze(1)

    def forward(self, context: ExtendedContext) -> Tensor:
        """Shapes: context.x (B, N, D), context.mask (B, N) → logits (B, K)."""
        return self.mlp(self.norm(self.pool(context)))
