"""Mask helpers. Every mask in mmctx is bool and True where a position is real."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lengths_to_mask", "masked_mean", "attention_mask"]


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths → (B, N) bool mask, True at positions ``< length``."""
    max_len = int(lengths.max().item()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Mean of ``x`` over real positions; rows with no real position give zeros.

    Shapes:
        x: (B, N, D)
        mask: (B, N) bool
        returns: (B, D)
    """
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    total = (x * weights).sum(dim)
    count = weights.sum(dim).clamp_min(1.0)
    return total / count


def attention_mask(
    key_mask: Tensor | None,
    num_queries: int,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    query_offset: int = 0,
    num_keys: int | None = None,
    device: torch.device | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """Combine key padding, an explicit mask and causality into one SDPA boolean mask.

    Returns ``(mask, empty_rows)``: ``mask`` is (B, 1, N, M) or (1, 1, N, M) bool (True =
    may attend) or None, and ``empty_rows`` (B, 1, N, 1) marks query rows that may attend
    to no key at all. SDPA returns NaN for such rows, so they are given one dummy key here
    and their output is zeroed by the caller.

    With key padding only (no ``attn_mask``, not causal) every query row is the same, so
    ``mask`` stays (B, 1, 1, M) and ``empty_rows`` (B, 1, 1, 1), broadcast by SDPA and
    ``masked_fill``: SDPA turns a bool mask into a float mask of the mask's own shape, so an
    expanded (B, 1, N, M) mask cost 4·N·M bytes per sample (16 GiB for one 64K-token full
    attention; 256 MiB measured at 8K), the key-padding one 4·M.

    Args:
        key_mask: (B, M) True at real keys, or None.
        num_queries: N.
        attn_mask: (N, M) or (B, N, M) bool, True = may attend, or None.
        is_causal: query i (at absolute position ``query_offset + i``) attends keys ``<= `` it.
        query_offset: absolute position of the first query (for KV-cached decoding).
        num_keys: M, needed when ``key_mask`` is None and ``is_causal`` is set.
        device: where to build the causal mask when neither ``key_mask`` nor ``attn_mask``
            is given (default: that of the masks given, else the default device).
    """
    mask: Tensor | None = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :]  # (B, 1, 1, M)
    if attn_mask is not None:
        extra = attn_mask[None, None] if attn_mask.dim() == 2 else attn_mask[:, None]
        mask = extra if mask is None else mask & extra
    if is_causal:
        m = num_keys if num_keys is not None else (key_mask.shape[1] if key_mask is not None else None)
        if m is None:
            raise ValueError("attention_mask: is_causal needs key_mask or num_keys")
        if key_mask is not None:
            device = key_mask.device
        elif attn_mask is not None:
            device = attn_mask.device
        q_pos = torch.arange(num_queries, device=device) + query_offset
        causal = torch.arange(m, device=device)[None, :] <= q_pos[:, None]  # (N, M)
        mask = causal[None, None] if mask is None else mask & causal[None, None]
    if mask is None:
        return None, None
    if attn_mask is not None or is_causal:
        mask = mask.expand(mask.shape[0], 1, num_queries, mask.shape[-1])
    # else key padding only: (B, 1, 1, M), the same for every query row
    empty = ~mask.any(-1, keepdim=True)  # (B, 1, N, 1), or (B, 1, 1, 1) for key padding only
    # under torch.export / torch.compile always take this branch: same result, no data-dependent branch
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or bool(empty.any()):
        mask = mask | empty  # attend to everything, output zeroed by the caller
        return mask, empty
    return mask, None
