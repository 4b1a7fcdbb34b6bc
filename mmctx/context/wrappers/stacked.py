"""An encoder followed by a context encoder over its own tokens, as one modality encoder."""

from __future__ import annotations

from torch import Tensor, nn

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

    Attributes:
        out_dim: the token width D.
    """

    def __init__(self, encoder: nn.Module, context: nn.Module) -> None:
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
        tokens = self.encoder(data, mask)
        out = self.context(tokens)
        if not isinstance(out, Tokens):
            raise TypeError(f"StackedEncoder: context {type(self.context).__name__} returned {type(out).__name__}, expected Tokens")
        check_shape("StackedEncoder context output", out.x, tuple(tokens.x.shape))
        return Tokens(out.x.masked_fill(~out.mask[..., None], 0.0), out.mask)
