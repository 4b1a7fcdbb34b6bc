"""A small transformer text encoder with RoPE positions, built from :mod:`mmctx.layers`."""

from __future__ import annotations

from torch import Tensor, nn

from mmctx.encoders._checks import check_bool_mask, check_token_ids
from mmctx.layers import TransformerEncoder
from mmctx.types import Tokens, check_shape

__all__ = ["TextTransformerEncoder"]


class TextTransformerEncoder(nn.Module):
    """Token embedding followed by a bidirectional pre-norm transformer with RoPE.

    Positions are rotary (relative), counted over each sample's *real* tokens, so a sample
    gives the same tokens whether it is right-padded, left-padded or encoded alone.
    Padding positions are never read: their ids are replaced by ``pad_id`` before the
    embedding, they are masked as attention keys, and their output rows are zeros.

    Args:
        vocab_size: number of token ids V; real ids must lie in ``[0, V)``. Left unset in
            YAML configs: the CLI fills it from the data module's tokenizer.
        dim: model width D, also the output width ``out_dim``.
        num_layers: number of transformer blocks.
        num_heads: attention heads H; ``dim`` must be divisible by it.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout on the embeddings, in attention and in the feed-forward.
        max_seq_len: the longest sequence T this encoder accepts (its window).
        pad_id: the id written into padding positions before the embedding lookup (None: 0;
            the CLI fills in the tokenizer's).
        checkpoint_blocks: activation checkpointing per transformer block in training
            (see :class:`~mmctx.layers.TransformerEncoder`): less memory, more time.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        max_seq_len: int = 512,
        pad_id: int | None = None,
        checkpoint_blocks: bool = False,
    ) -> None:
        super().__init__()
        if vocab_size is None or vocab_size < 1:
            raise ValueError(
                f"TextTransformerEncoder: vocab_size must be an int >= 1, got {vocab_size!r} "
                "(from the CLI it is filled in from the data module's tokenizer)"
            )
        if max_seq_len < 1:
            raise ValueError(f"TextTransformerEncoder: max_seq_len must be >= 1, got {max_seq_len}")
        pad_id = 0 if pad_id is None else pad_id  # from the CLI: the tokenizer's pad id
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"TextTransformerEncoder: pad_id must be in [0, {vocab_size}), got {pad_id}")
        self.vocab_size = vocab_size
        self.dim = dim
        self.max_seq_len = max_seq_len
        self.pad_id = pad_id
        self.out_dim = dim
        self.embed = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            dim, num_layers, num_heads, mlp_ratio, dropout, rope=True, checkpoint_blocks=checkpoint_blocks
        )

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode token ids.

        Shapes:
            data: (B, T) long token ids; values at padding positions are ignored
            mask: (B, T) bool, True at real tokens; an all-False row is a missing sample
            returns: Tokens with x (B, T, D) and mask (B, T) equal to ``mask``; rows of
                padding and of missing samples are zeros
        """
        check_shape("text data", data, ("B", "T"))
        check_shape("text mask", mask, tuple(data.shape))
        check_bool_mask("text mask", mask)
        if data.shape[1] > self.max_seq_len:
            raise ValueError(
                f"text data: sequence length T={data.shape[1]} exceeds max_seq_len={self.max_seq_len} "
                f"(got shape {tuple(data.shape)})"
            )
        ids = check_token_ids("text data", data, mask, self.vocab_size, self.pad_id)  # (B, T)
        # RoPE position of a token = number of real tokens before it, so padding is invisible
        positions = (mask.long().cumsum(dim=1) - 1).clamp_min(0)  # (B, T)
        x = self.drop(self.embed(ids))  # (B, T, D)
        x = self.encoder(x, mask=mask, positions=positions)  # (B, T, D)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # padding rows → zeros
        return Tokens(x, mask)

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, dim={self.dim}, max_seq_len={self.max_seq_len}, pad_id={self.pad_id}"
