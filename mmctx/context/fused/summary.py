"""Summary tokens: a few max-pooled tokens prepended to the extended context."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmctx.types import ExtendedContext

__all__ = ["SummaryTokens"]

#: The modality name of the summary tokens in the returned context's ``names``.
SUMMARY_NAME = "summary"


class SummaryTokens(nn.Module):
    """Prepend ``num_tokens`` summary tokens to an extended context: per-channel maxima over
    its real tokens, each of a learned linear map, plus a learned embedding per summary.

    Why: a head that *attends* the context (a decoder's cross-attention) gives one token out
    of ``N`` a ``1 / N`` share of its softmax at initialisation, and so ``1 / N`` of the
    gradient: finding one needle sentence among thousands of tokens starts that diluted and
    can stay at chance for hundreds of steps. A per-channel max sends the gradient to the
    token that holds each channel's maximum whatever ``N`` is (the classifier head's
    ``pooling="max"`` learns the long-range task at once for that reason, see
    docs/long_context.md), and appending distractors never changes the maximum of a token
    that stands out. The summaries carry what stands out in the whole context in a fixed
    number of tokens the decoder learns to attend (they are as easy to tell apart as the
    picture's tokens: a learned embedding each); the rest of the context stays, whole.

    Args:
        dim: width D of the context.
        num_tokens: summary tokens S (``S * D`` max-pooled channels in all).
        modality: pool over this modality's tokens only (None: every real token).

    The returned context is ``[summaries; context]``: x (B, S + N, D), mask True at the
    summaries of rows that have a real token to pool (a row with none gets none), modality
    ids pointing at ``"summary"``, appended to ``names``.
    """

    def __init__(self, dim: int, num_tokens: int = 4, modality: str | None = None) -> None:
        super().__init__()
        if dim < 1 or num_tokens < 1:
            raise ValueError(f"SummaryTokens: dim and num_tokens must be >= 1, got {dim}, {num_tokens}")
        self.dim = dim
        self.num_tokens = num_tokens
        self.modality = modality
        self.proj = nn.Linear(dim, dim * num_tokens)
        self.embed = nn.Parameter(torch.randn(num_tokens, dim) * dim**-0.5)
        self.norm = nn.LayerNorm(dim)

    @property
    def out_dim(self) -> int:
        return self.dim

    def forward(self, context: ExtendedContext) -> ExtendedContext:
        """Prepend the summaries.

        Shapes:
            context.x: (B, N, D), context.mask / context.modality: (B, N)
            returns: ExtendedContext with x (B, S + N, D), mask and modality (B, S + N)
        """
        x, mask = context.x, context.mask
        if x.shape[-1] != self.dim:
            raise ValueError(f"SummaryTokens: context width {x.shape[-1]} != dim {self.dim}")
        B, N, D = x.shape
        S = self.num_tokens
        pooled = mask
        if self.modality is not None:
            if self.modality not in context.names:
                raise ValueError(f"SummaryTokens: modality {self.modality!r} is not in the context's {list(context.names)}")
            pooled = mask & (context.modality == context.names.index(self.modality))  # (B, N)
        h = self.proj(x)  # (B, N, S*D)
        h = h.masked_fill(~pooled[..., None], float("-inf")).amax(1)  # (B, S*D): max over the pooled tokens
        has = pooled.any(1)  # (B,) rows with a token to pool
        h = torch.where(has[:, None], h, torch.zeros_like(h))  # no -inf in rows with nothing to pool
        summary = self.norm(h.view(B, S, D) + self.embed)  # (B, S, D)
        names = tuple(context.names)
        if SUMMARY_NAME not in names:
            names = (*names, SUMMARY_NAME)
        ids = torch.full((B, S), names.index(SUMMARY_NAME), dtype=context.modality.dtype, device=x.device)
        return ExtendedContext(
            torch.cat([summary.to(x.dtype), x], 1),  # (B, S + N, D)
            torch.cat([has[:, None].expand(B, S), mask], 1),  # (B, S + N)
            torch.cat([ids, context.modality], 1),
            names,
        )
