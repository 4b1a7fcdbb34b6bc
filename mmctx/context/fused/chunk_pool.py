"""Chunk max-pooling: one modality's tokens pooled ``chunk`` at a time, per channel."""

from __future__ import annotations

import torch
from torch import nn

from mmctx.types import ExtendedContext

__all__ = ["ChunkMaxPool"]


class ChunkMaxPool(nn.Module):
    """Shorten one modality of an extended context ``chunk`` times: each run of ``chunk``
    consecutive tokens becomes one token, the per-channel max of a learned linear map of
    its real tokens (then a LayerNorm). The other modalities' tokens pass unchanged.

    Why: a decoder's cross-attention is a softmax over every context token. Over a document
    of ``N`` tokens one key sentence starts with a ``1 / N`` share of it, and of the gradient,
    so a decoder over a few thousand tokens sat at chance for most of its budget
    (docs/long_context.md, generation). Pooled ``chunk`` at a time the softmax runs over
    ``N / chunk`` tokens, and a max keeps a token that stands out in its chunk whatever the
    other tokens of the chunk are (the gradient of a max reaches the token that holds it).
    The decoder still reads the whole document, ``chunk`` times shorter: its cached
    cross-attention keys/values grow with the document's length.

    Args:
        dim: width D of the context.
        chunk: tokens per pooled token.
        modality: the modality pooled; its tokens must be one contiguous block of every row
            (as :class:`~mmctx.fusion.ConcatFusion` lays them out).

    Chunks are aligned at the first token of the modality's block, so a row's pooled tokens
    never depend on its padding; a chunk with no real token is padding (mask False, x 0).
    """

    def __init__(self, dim: int, chunk: int = 16, modality: str = "text") -> None:
        super().__init__()
        if dim < 1 or chunk < 1:
            raise ValueError(f"ChunkMaxPool: dim and chunk must be >= 1, got {dim}, {chunk}")
        self.dim = dim
        self.chunk = chunk
        self.modality = modality
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    @property
    def out_dim(self) -> int:
        return self.dim

    def forward(self, context: ExtendedContext) -> ExtendedContext:
        """Pool the modality's block.

        Shapes:
            context.x: (B, N, D), context.mask / context.modality: (B, N)
            returns: ExtendedContext (B, N - T + ceil(T / chunk), D), T the block's length
        """
        x, mask = context.x, context.mask
        if x.shape[-1] != self.dim:
            raise ValueError(f"ChunkMaxPool: context width {x.shape[-1]} != dim {self.dim}")
        if self.modality not in context.names:
            raise ValueError(f"ChunkMaxPool: modality {self.modality!r} is not in the context's {list(context.names)}")
        m = context.names.index(self.modality)
        where = (context.modality == m).all(0)  # (N,) the block's columns, the same in every row
        if not bool(((context.modality == m) == where[None]).all()):
            raise ValueError(f"ChunkMaxPool: the {self.modality!r} tokens sit at different positions in different rows")
        columns = where.nonzero().flatten()
        if columns.numel() == 0:
            return context
        start, end = int(columns[0]), int(columns[-1]) + 1
        if end - start != columns.numel():
            raise ValueError(f"ChunkMaxPool: the {self.modality!r} tokens are not one contiguous block")
        B, T, c = x.shape[0], end - start, self.chunk
        n = -(-T // c)  # chunks
        h = self.proj(x[:, start:end])  # (B, T, D)
        real = mask[:, start:end]  # (B, T)
        if n * c != T:  # pad the block to whole chunks (padding is masked out of the max)
            h = torch.cat([h, h.new_zeros(B, n * c - T, self.dim)], 1)
            real = torch.cat([real, real.new_zeros(B, n * c - T)], 1)
        h = h.view(B, n, c, self.dim).masked_fill(~real.view(B, n, c, 1), float("-inf")).amax(2)  # (B, n, D)
        has = real.view(B, n, c).any(2)  # (B, n)
        pooled = torch.where(has[..., None], self.norm(torch.where(has[..., None], h, torch.zeros_like(h))), torch.zeros_like(h))
        ids = torch.full((B, n), m, dtype=context.modality.dtype, device=x.device)
        return ExtendedContext(
            torch.cat([x[:, :start], pooled.to(x.dtype), x[:, end:]], 1),
            torch.cat([mask[:, :start], has, mask[:, end:]], 1),
            torch.cat([context.modality[:, :start], ids, context.modality[:, end:]], 1),
            context.names,
        )
