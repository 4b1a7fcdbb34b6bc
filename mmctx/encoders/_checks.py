"""Input checks shared by the encoders (private: the public names live in each encoder)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_bool_mask", "check_token_ids", "check_prefix_mask"]


def check_bool_mask(name: str, mask: Tensor) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``mask`` is a bool tensor."""
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: expected a torch.bool mask (True = real), got dtype {mask.dtype}")


def check_token_ids(name: str, ids: Tensor, mask: Tensor, vocab_size: int, pad_id: int) -> Tensor:
    """Validate token ids at real positions and return them with ``pad_id`` at padding.

    Values at padding positions are never read (a collate function may leave anything
    there), so only real positions must lie in ``[0, vocab_size)``.

    Shapes:
        ids: (B, T) integer
        mask: (B, T) bool, True at real tokens
        returns: (B, T) long
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer token ids, got dtype {ids.dtype}")
    ids = ids.long().masked_fill(~mask, pad_id)  # (B, T)
    if ids.numel() > 0:
        bad = (ids < 0) | (ids >= vocab_size)
        if bool(bad.any()):
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{name}: token id {int(ids[b, t])} at sample {b}, position {t} is outside "
                f"[0, vocab_size={vocab_size}) (data shape {tuple(ids.shape)})"
            )
    return ids


def check_prefix_mask(name: str, mask: Tensor) -> Tensor:
    """Check that every row of ``mask`` is True on a prefix and return the row lengths.

    Shapes:
        mask: (B, S) bool
        returns: (B,) long lengths
    """
    lengths = mask.sum(dim=1)  # (B,)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]  # (B, S)
    if not bool((prefix == mask).all()):
        b = int((prefix != mask).any(dim=1).nonzero()[0])
        raise ValueError(
            f"{name}: each row must be True on a prefix (real samples first, then padding); "
            f"row {b} is not (mask shape {tuple(mask.shape)})"
        )
    return lengths
