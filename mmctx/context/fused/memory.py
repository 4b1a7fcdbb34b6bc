"""Recurrent memory: a long context processed segment by segment with memory tokens carried over."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor, nn

from mmctx.layers import TransformerEncoder
from mmctx.types import ExtendedContext, Tokens, check_shape

__all__ = ["RecurrentMemoryEncoder"]

Context = TypeVar("Context", ExtendedContext, Tokens)


class RecurrentMemoryEncoder(nn.Module):
    """Segment-recurrent transformer with memory tokens (RMT, Bulatov et al. 2022).

    The context is cut into segments of ``segment_len`` tokens. Each segment is encoded by a
    bidirectional :class:`~mmctx.layers.TransformerEncoder` (RoPE) together with M memory
    tokens prepended to it: ``encoder([memory; segment])``, memory at RoPE positions 0..M-1
    and the segment at M..M+len-1 (positions restart every segment, so any length works).
    The memory tokens attend and are attended by the segment; their outputs become the memory
    of the next segment. The first segment gets the learned initial memory (or the
    ``memory`` passed in, to continue a stream). Cost: O(N·(segment_len + M)) time, one
    segment's activations at a time in inference.

    Exactly: with a single segment (``segment_len >= N``) the output tokens equal
    ``self.encoder(cat([m0, x]), cat([ones, mask]))[:, M:]`` and the final memory equals its
    first M rows, where ``m0`` is the initial memory expanded over the batch — the plain
    encoder of the same weights over [memory; x]. (A sample whose segment is all padding keeps
    its memory unchanged, so trailing padding never changes the final memory.)

    Gradients (truncated back-propagation through time): the segments are taken in runs of
    ``bptt_segments``; the memory entering the first segment of each run (other than the
    first) is detached, so a gradient crosses at most ``bptt_segments - 1`` memory hand-offs
    and never reaches an earlier run. ``bptt_segments=1`` detaches every hand-off;
    ``bptt_segments >= number of segments`` back-propagates through the whole context.

    Args:
        dim: context width D.
        num_layers: transformer blocks.
        num_heads: attention heads.
        segment_len: tokens per segment.
        num_memory: memory tokens M.
        bptt_segments: length of the runs of segments gradients flow through (>= 1).
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
        append_memory: append the final memory to the output context (as M extra tokens with
            mask True and modality name ``"memory"``), so a head can read it.
        checkpoint_blocks: activation checkpointing per block in training (see
            :class:`~mmctx.layers.TransformerEncoder`): less memory, more time.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        segment_len: int = 512,
        num_memory: int = 8,
        bptt_segments: int = 1,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        append_memory: bool = False,
        checkpoint_blocks: bool = False,
    ) -> None:
        super().__init__()
        if segment_len < 1:
            raise ValueError(f"RecurrentMemoryEncoder: segment_len must be >= 1, got {segment_len}")
        if num_memory < 1:
            raise ValueError(f"RecurrentMemoryEncoder: num_memory must be >= 1, got {num_memory}")
        if bptt_segments < 1:
            raise ValueError(f"RecurrentMemoryEncoder: bptt_segments must be >= 1, got {bptt_segments}")
        self.dim = dim
        self.segment_len = segment_len
        self.num_memory = num_memory
        self.bptt_segments = bptt_segments
        self.append_memory = append_memory
        self.memory = nn.Parameter(torch.randn(num_memory, dim) * 0.02)
        self.encoder = TransformerEncoder(
            dim, num_layers, num_heads, mlp_ratio, dropout, rope=True, checkpoint_blocks=checkpoint_blocks
        )

    def initial_memory(self, batch_size: int) -> Tensor:
        """The learned initial memory for a batch. Shapes: returns (B, M, D)."""
        return self.memory.expand(batch_size, -1, -1)

    def forward(self, context: Context) -> Context:
        """Encode segment by segment; see :meth:`encode` (this drops the final memory unless
        ``append_memory``).

        Shapes:
            context.x: (B, N, D), context.mask (and context.modality): (B, N)
            returns: the same type with x (B, N, D) — or (B, N + M, D) with ``append_memory``
        """
        out, memory = self.encode(context)
        if not self.append_memory:
            return out
        B, M = memory.shape[0], self.num_memory
        x = torch.cat([out.x, memory.to(out.x.dtype)], dim=1)  # (B, N+M, D)
        mask = torch.cat([out.mask, out.mask.new_ones(B, M)], dim=1)  # (B, N+M)
        if isinstance(out, Tokens):
            return Tokens(x, mask)
        names = (*out.names, "memory")
        mem_ids = out.modality.new_full((B, M), len(names) - 1)
        return ExtendedContext(x, mask, torch.cat([out.modality, mem_ids], dim=1), names)

    def encode(self, context: Context, memory: Tensor | None = None) -> tuple[Context, Tensor]:
        """Encode segment by segment, carrying the memory.

        Shapes:
            context.x: (B, N, D), context.mask: (B, N) bool, True at real tokens
            memory: (B, M, D) memory to start from (default: the learned initial memory)
            returns: (the context re-encoded, same type and shapes — the per-segment outputs
                concatenated; final memory (B, M, D))
        """
        if not isinstance(context, (ExtendedContext, Tokens)):
            raise TypeError(f"RecurrentMemoryEncoder: expected ExtendedContext or Tokens, got {type(context).__name__}")
        check_shape("RecurrentMemoryEncoder context.x", context.x, ("B", "N", self.dim))
        x, mask = context.x, context.mask
        B, N, D = x.shape
        M = self.num_memory
        if memory is None:
            memory = self.initial_memory(B).to(x.dtype)
        else:
            check_shape("RecurrentMemoryEncoder memory", memory, (B, M, D))
        ones = mask.new_ones(B, M)
        outputs: list[Tensor] = []
        for i, start in enumerate(range(0, N, self.segment_len)):
            if i > 0 and i % self.bptt_segments == 0:
                memory = memory.detach()  # truncated BPTT: a new run of segments
            seg = x[:, start : start + self.segment_len]  # (B, L, D)
            seg_mask = mask[:, start : start + self.segment_len]  # (B, L)
            out = self.encoder(torch.cat([memory, seg], dim=1), torch.cat([ones, seg_mask], dim=1))  # (B, M+L, D)
            has_input = seg_mask.any(dim=1)[:, None, None]  # (B, 1, 1)
            memory = torch.where(has_input, out[:, :M], memory)  # all-padding segment: memory unchanged
            outputs.append(out[:, M:])
        y = torch.cat(outputs, dim=1) if outputs else x  # (B, N, D)
        if isinstance(context, Tokens):
            return Tokens(y, mask), memory
        return ExtendedContext(y, mask, context.modality, context.names), memory

    def extra_repr(self) -> str:
        return (
            f"segment_len={self.segment_len}, num_memory={self.num_memory}, bptt_segments={self.bptt_segments}, "
            f"append_memory={self.append_memory}"
        )
