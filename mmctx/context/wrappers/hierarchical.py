"""Hierarchical encoding: chunk → encode → pool to summary tokens → second-level encoder."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmctx.layers import MultiHeadAttention, masked_mean
from mmctx.types import Tokens, check_shape

__all__ = ["HierarchicalEncoder"]

POOLINGS: tuple[str, ...] = ("attention", "mean", "max")


class HierarchicalEncoder(nn.Module):
    """Encode a long sequence as chunks, summarise each chunk, and relate the summaries.

    The input (B, T) is cut into C = ceil(T / chunk_size) consecutive, non-overlapping chunks;
    every chunk that holds real input is encoded by ``encoder`` (all chunks of the batch in
    one call, or ``chunk_batch_size`` at a time); each chunk's tokens are pooled to
    ``summary_tokens`` vectors; ``second_level`` (e.g. a
    :class:`~mmctx.layers.TransformerEncoder`, full or with a ``window``, of width
    ``encoder.out_dim``) then lets the
    C·S summaries of a sample attend to each other, in chunk order (its RoPE positions are the
    summary indices). The result is a :class:`Tokens` of C·S tokens per sample — the sequence
    is compressed ``chunk_size / S`` times — which a fusion takes like any encoder's output,
    so this module is itself an encoder (``forward(data, mask) -> Tokens``, ``out_dim``).

    Pooling: ``"attention"``: S learned queries cross-attend the chunk's real tokens (plus a
    residual and LayerNorm); ``"mean"``: the masked mean of the chunk's tokens (S must be 1);
    ``"max"``: their per-channel masked max (S must be 1), which keeps one token's feature
    (a needle) undiluted by the rest of its chunk.
    A chunk with no real input (padding, a missing sample) gives masked-out summaries; with an
    encoder that has ``output_lengths`` (audio), a final chunk too short to give one token is
    dropped as well.

    Args:
        encoder: the chunk encoder (a built module honouring the encoder contract over (B, T)
            sequences, e.g. ``TextTransformerEncoder`` or ``RNNAudioEncoder``).
        chunk_size: chunk length in input units (text tokens, audio samples); at most
            ``encoder.max_seq_len`` if it has one.
        summary_tokens: summaries S per chunk.
        second_level: module called as ``second_level(x (B, C·S, D), mask (B, C·S)) -> (B, C·S, D)``;
            None returns the summaries as they are.
        pooling: ``"attention"``, ``"mean"`` or ``"max"``.
        num_heads: heads of the attention pooling.
        chunk_batch_size: encode at most this many chunks per encoder call (None: all).
        checkpoint_blocks: activation checkpointing per encoder call (with its pooling) in
            training (``torch.utils.checkpoint``, non-reentrant): only the summaries are
            kept and each call of ``chunk_batch_size`` chunks is recomputed in the backward
            pass. Needs a ``chunk_batch_size`` to save memory. Same outputs and gradients.

    Attributes:
        out_dim: the token width D (the chunk encoder's).
    """

    def __init__(
        self,
        encoder: nn.Module,
        chunk_size: int,
        summary_tokens: int = 1,
        second_level: nn.Module | None = None,
        pooling: str = "attention",
        num_heads: int = 4,
        chunk_batch_size: int | None = None,
        checkpoint_blocks: bool = False,
    ) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"HierarchicalEncoder: chunk_size must be >= 1, got {chunk_size}")
        if summary_tokens < 1:
            raise ValueError(f"HierarchicalEncoder: summary_tokens must be >= 1, got {summary_tokens}")
        if pooling not in POOLINGS:
            raise ValueError(f"HierarchicalEncoder: pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        if pooling in ("mean", "max") and summary_tokens != 1:
            raise ValueError(
                f"HierarchicalEncoder: pooling={pooling!r} gives one summary per chunk, got summary_tokens={summary_tokens}"
            )
        if chunk_batch_size is not None and chunk_batch_size < 1:
            raise ValueError(f"HierarchicalEncoder: chunk_batch_size must be >= 1, got {chunk_batch_size}")
        if not hasattr(encoder, "out_dim"):
            raise ValueError(f"HierarchicalEncoder: encoder {type(encoder).__name__} has no out_dim (encoder contract)")
        max_len = getattr(encoder, "max_seq_len", None)
        if max_len is not None and chunk_size > max_len:
            raise ValueError(
                f"HierarchicalEncoder: chunk_size={chunk_size} exceeds the encoder's max_seq_len={max_len}"
            )
        self.encoder = encoder
        self.chunk_size = chunk_size
        self.summary_tokens = summary_tokens
        self.pooling = pooling
        self.chunk_batch_size = chunk_batch_size
        self.checkpoint_blocks = checkpoint_blocks
        self.out_dim: int = encoder.out_dim
        D = self.out_dim
        if pooling == "attention":
            self.queries = nn.Parameter(torch.randn(summary_tokens, D) * 0.02)
            self.pool_attn = MultiHeadAttention(D, num_heads)
            self.pool_norm = nn.LayerNorm(D)
        self.second_level = second_level

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Chunk, encode, summarise, and encode the summaries.

        Shapes:
            data: (B, T) token ids or waveform samples; values at padding are never read
            mask: (B, T) bool, True at real positions
            returns: Tokens with x (B, C·S, D), C = ceil(T / chunk_size), and mask (B, C·S),
                True for the summaries of chunks that hold real input; masked rows are zeros
        """
        check_shape("HierarchicalEncoder data", data, ("B", "T"))
        check_shape("HierarchicalEncoder mask", mask, tuple(data.shape))
        if mask.dtype != torch.bool:
            raise ValueError(f"HierarchicalEncoder mask: expected torch.bool, got {mask.dtype}")
        B, T = data.shape
        L, S, D = self.chunk_size, self.summary_tokens, self.out_dim
        C = max(math.ceil(T / L), 1)
        pad = C * L - T
        chunks = torch.nn.functional.pad(data, (0, pad)).view(B * C, L)  # (B·C, L)
        chunk_mask = torch.nn.functional.pad(mask, (0, pad), value=False).view(B * C, L)  # (B·C, L)
        real = chunk_mask.sum(dim=1)  # (B·C,)
        lengths_fn = getattr(self.encoder, "output_lengths", None)
        usable = real > 0
        if lengths_fn is not None:
            usable = usable & (lengths_fn(real) > 0)  # a tail chunk too short for one token is dropped
        rows = usable.nonzero().squeeze(1)  # (P,)

        summaries = data.new_zeros(B * C, S, D, dtype=self._dtype())  # (B·C, S, D)
        if rows.numel() > 0:
            pooled = self._encode_and_pool(chunks.index_select(0, rows), chunk_mask.index_select(0, rows))  # (P, S, D)
            summaries = summaries.to(pooled.dtype).index_copy(0, rows, pooled)
        x = summaries.view(B, C * S, D)  # (B, C·S, D)
        out_mask = usable.view(B, C, 1).expand(B, C, S).reshape(B, C * S)  # (B, C·S)
        if self.second_level is not None:
            try:
                x = self.second_level(x, out_mask)
            except RuntimeError as err:  # e.g. a second level built for another width
                raise ValueError(
                    f"HierarchicalEncoder: second_level failed on summaries of shape {tuple(x.shape)} "
                    f"(width D = encoder.out_dim = {D}): {err}"
                ) from err
            check_shape("HierarchicalEncoder second_level output", x, (B, C * S, D))
        return Tokens(x.masked_fill(~out_mask[..., None], 0.0), out_mask)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _encode_and_pool(self, chunks: Tensor, chunk_mask: Tensor) -> Tensor:
        """Shapes: chunks, chunk_mask (P, L) → (P, S, D) summaries."""
        size = self.chunk_batch_size or chunks.shape[0]
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        out = []
        for i in range(0, chunks.shape[0], size):
            if recompute:
                out.append(checkpoint(self._pool_chunks, chunks[i : i + size], chunk_mask[i : i + size], use_reentrant=False))
            else:
                out.append(self._pool_chunks(chunks[i : i + size], chunk_mask[i : i + size]))
        return torch.cat(out)

    def _pool_chunks(self, chunks: Tensor, chunk_mask: Tensor) -> Tensor:
        """Encode one batch of chunks and pool it. Shapes: chunks, chunk_mask (p, L) → (p, S, D)."""
        tok = self.encoder(chunks, chunk_mask)  # x (p, n, D)
        if self.pooling == "mean":
            return masked_mean(tok.x, tok.mask).unsqueeze(1)  # (p, 1, D)
        if self.pooling == "max":  # every chunk here has a real token
            return tok.x.masked_fill(~tok.mask[..., None], float("-inf")).amax(dim=1, keepdim=True)  # (p, 1, D)
        q = self.queries.to(tok.x.dtype).expand(tok.x.shape[0], -1, -1)  # (p, S, D)
        return self.pool_norm(q + self.pool_attn(q, context=tok.x, key_mask=tok.mask))  # (p, S, D)

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}, summary_tokens={self.summary_tokens}, pooling={self.pooling!r}"
