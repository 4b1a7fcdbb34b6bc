"""An encoder followed by a context encoder over its own tokens, as one modality encoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmctx.types import Tokens, check_shape

__all__ = ["StackedEncoder"]


class StackedEncoder(nn.Module):
    """``context(encoder(data, mask))``: a long-context module run over one modality's tokens.

    The context encoders of :mod:`mmctx.context.fused` (:class:`~mmctx.context.ContextEncoder`,
    full or with a sliding window, and :class:`~mmctx.context.RecurrentMemoryEncoder`)
    normally re-encode the fused context, after the fusion. Wrapped here they re-encode one
    modality's tokens *before* the fusion, so e.g. a long text is contextualised with banded
    attention or segment memory and a fusion (cross-attention from the image) then reads
    every one of its tokens. With a cheap token encoder (a ``TextTransformerEncoder`` with
    ``num_layers=0``, i.e. embeddings only, and a ``max_seq_len`` as long as the documents),
    the cost stays linear in the length. The result is itself an encoder
    (``forward(data, mask) -> Tokens``, ``out_dim``), so it goes wherever one does in a YAML
    config.

    Args:
        encoder: the token encoder (encoder contract: ``forward(data, mask) -> Tokens``,
            ``out_dim``).
        context: a module ``Tokens -> Tokens`` of width ``encoder.out_dim`` (its ``dim``).
        checkpoint_blocks: activation checkpointing of each stage (the encoder, then the
            context module) in training (``torch.utils.checkpoint``, non-reentrant): only the
            tokens between the stages are kept and each stage is recomputed in the backward
            pass. For finer units, set ``checkpoint_blocks`` on the stages themselves (a
            ``ContextEncoder``, ``RecurrentMemoryEncoder`` or ``TextTransformerEncoder``
            checkpoints each transformer block). Same outputs and gradients.

    Attributes:
        out_dim: the token width D.
    """

    def __init__(self, encoder: nn.Module, context: nn.Module, checkpoint_blocks: bool = False) -> None:
        super().__init__()
        if not hasattr(encoder, "out_dim"):
            raise ValueError(f"StackedEncoder: encoder {type(encoder).__name__} has no out_dim (encoder contract)")
        width = getattr(context, "dim", None)
        if width is not None and width != encoder.out_dim:
            raise ValueError(
                f"StackedEncoder: context.dim={width} but encoder.out_dim={encoder.out_dim}; make them equal"
            )
        self.encoder = encoder
        self.context = context
        self.checkpoint_blocks = checkpoint_blocks
        self.out_dim: int = encoder.out_dim
        max_len = getattr(encoder, "max_seq_len", None)
        if max_len is not None:
            self.max_seq_len: int = max_len

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode, then re-encode the tokens in context.

        Shapes:
            data: (B, T) as the wrapped encoder takes it; mask: (B, T) bool
            returns: Tokens with x (B, N, D) and mask (B, N), N the wrapped encoder's token
                count; padding rows are zeros
        """
        if self.checkpoint_blocks and torch.is_grad_enabled():
            x, tok_mask = checkpoint(self._encode, data, mask, use_reentrant=False)
            x, out_mask = checkpoint(self._contextualise, x, tok_mask, use_reentrant=False)
        else:
            x, out_mask = self._contextualise(*self._encode(data, mask))
        return Tokens(x.masked_fill(~out_mask[..., None], 0.0), out_mask)

    def _encode(self, data: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The token encoder's output as a tuple (what ``checkpoint`` handles). Shapes: (B, N, D), (B, N)."""
        tokens = self.encoder(data, mask)
        return tokens.x, tokens.mask

    def _contextualise(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The context module over the tokens. Shapes: x (B, N, D), mask (B, N) → the same."""
        out = self.context(Tokens(x, mask))
        if not isinstance(out, Tokens):
            raise TypeError(f"StackedEncoder: context {type(self.context).__name__} returned {type(out).__name__}, expected Tokens")
        check_shape("StackedEncoder context output", out.x, tuple(x.shape))
        return out.x, out.mask
