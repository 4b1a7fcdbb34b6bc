"""Banded (sliding-window) self-attention kernels with global tokens: cost O(N·w), not O(N²).

The functional core of :class:`~mmctx.layers.MultiHeadAttention` built with ``window=w``:
it projects and rotates queries, keys and values as for full attention, then calls
:func:`banded_attention` instead of one dense SDPA call.

Query ``i`` attends key ``j`` when ``|i - j| <= window``; the first ``num_global`` positions
are *global*: they attend every key and every query attends them (Longformer, Beltagy et
al. 2020). Two interchangeable backends compute exactly that pattern:

* ``"blocked"`` (default, compile-free): the non-global part of the sequence is cut into
  query blocks of ``b`` positions (default ``window // 2``, :func:`default_block_size`);
  block ``i`` attends the ``b + 2·window`` keys around it (which contain its whole band)
  plus the global keys, through one batched ``F.scaled_dot_product_attention`` call with an
  exact band mask of shape (B·N/b, 1, b, b + 2w + G). The key/value windows are strided
  views of the padded keys (no copy; their overlapping gradients are summed by block in a
  hand-written backward). Memory and time are O(N·w); no N×N tensor is ever built.
* ``"flex"``: ``torch.nn.attention.flex_attention`` (compiled with ``torch.compile``) with a
  block-sparse mask built directly from the band (``BlockMask.from_kv_blocks``), so building
  the mask is O(N·w) too. The first call per shape compiles (about 26 s on a 2-core CPU).
  On CPU, torch 2.9's compiled flex_attention has no backward pass, so CPU calls that need
  gradients fall back to ``"blocked"`` (with a one-time warning); on GPU it trains.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BACKENDS", "banded_attention", "default_block_size", "sliding_window_mask"]

BACKENDS: tuple[str, ...] = ("blocked", "flex")
_FLEX_BLOCK = 128  # flex_attention's tile size


def sliding_window_mask(
    num_tokens: int, window: int, num_global: int = 0, device: torch.device | None = None
) -> Tensor:
    """The dense (N, N) boolean pattern of :func:`banded_attention` (True = may attend).

    For tests and small N only: it is exactly what the block-local backends compute without
    ever building it.

    Shapes:
        returns: (N, N) bool
    """
    idx = torch.arange(num_tokens, device=device)
    band = (idx[:, None] - idx[None, :]).abs() <= window  # (N, N)
    is_global = idx < num_global  # (N,)
    return band | is_global[:, None] | is_global[None, :]


def _rows_without_keys(key_mask: Tensor, window: int, num_global: int) -> Tensor:
    """(B, N) bool: query rows whose band ∪ global keys hold no real key — O(N) via cumsum."""
    B, N = key_mask.shape
    counts = F.pad(key_mask.long().cumsum(dim=1), (1, 0))  # (B, N+1), counts[:, i] = real keys < i
    idx = torch.arange(N, device=key_mask.device)
    hi = (idx + window + 1).clamp_max(N)
    lo = (idx - window).clamp_min(0)
    in_band = counts[:, hi] - counts[:, lo]  # (B, N)
    in_global = counts[:, min(num_global, N)][:, None]  # (B, 1)
    any_key = counts[:, N][:, None].expand(B, N)  # (B, N)
    has = torch.where(idx[None, :] < num_global, any_key, in_band + in_global)
    return has == 0


def banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    window: int,
    num_global: int = 0,
    dropout_p: float = 0.0,
    backend: str = "blocked",
    block_size: int | None = None,
) -> Tensor:
    """Self-attention of ``q`` over ``k, v`` restricted to a ±``window`` band plus global tokens.

    ``block_size``: query-block length of the ``"blocked"`` backend (default
    :func:`default_block_size`); it must divide ``2·window``.

    Shapes:
        q, k, v: (B, H, N, d), already projected and rotated
        key_mask: (B, N) bool, True at real keys, or None (padding is never attended)
        returns: (B, H, N, d); query rows with no real key in their band (nor a global key)
            are zeros, not NaN
    """
    if backend == "flex" and _flex_can_run(q):
        return _flex_attention(q, k, v, key_mask, window, num_global)
    return _blocked_attention(q, k, v, key_mask, window, num_global, dropout_p, block_size)


def _sdpa_no_nan(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> Tensor:
    """SDPA where query rows allowed no key give zeros (SDPA itself would give NaN).

    Shapes: q (..., Q, d), k/v (..., K, d), mask (..., 1 or H, Q, K) bool → (..., Q, d)
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    empty = ~mask.any(dim=-1, keepdim=True)  # (..., Q, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty, dropout_p=dropout_p)
    return out.masked_fill(empty, 0.0)


def default_block_size(window: int) -> int:
    """Query-block length of the blocked backend for a ±``window`` band.

    A block of ``b`` queries attends ``b + 2·window`` keys of which ``2·window + 1`` per query
    are in its band, so smaller blocks waste less work (b = w: 67 % useful, w/2: 80 %,
    w/4: 89 %) but make more, smaller SDPA problems (w/4 measured slower than w/2 on the CPU
    here for w = 128). It must divide ``2·window`` so the key windows' gradients sum by block
    (see :class:`_KeyWindows`).
    """
    return window // 2 if window >= 32 and window % 2 == 0 else window


class _KeyWindows(torch.autograd.Function):
    """Overlapping key/value windows of every query block, as one strided view (no copy).

    Forward: pad the local keys by ``window`` on both sides and return the (B·nb, H, K, d)
    view whose block ``i`` holds padded rows ``i·b .. i·b + K`` (K = b + 2·window). Backward:
    the windows overlap, so each key's gradient is the sum of its K/b appearances: K/b
    strided slice-adds, where autograd's generic ``unfold`` backward is a slow scatter.

    Shapes:
        x: (B, L, H, d) keys or values (any strides with a contiguous last dim)
        returns: (B·nb, H, K, d)
    """

    @staticmethod
    def forward(ctx, x: Tensor, block: int, window: int, nb: int) -> Tensor:
        B, L, H, d = x.shape
        K = block + 2 * window
        padded = F.pad(x, (0, 0, 0, 0, window, nb * block - L + window)).contiguous()  # (B, Lp, H, d), Lp = nb·b + 2w
        Lp = padded.shape[1]
        ctx.shape, ctx.block, ctx.window, ctx.nb = (B, L, H, d), block, window, nb
        windows = padded.as_strided((B, nb, H, K, d), (Lp * H * d, block * H * d, d, H * d, 1))  # (B, nb, H, K, d)
        return windows.reshape(B * nb, H, K, d)  # (B·nb, H, K, d): a view when B == 1

    @staticmethod
    def backward(ctx, grad: Tensor):
        B, L, H, d = ctx.shape
        b, w, nb = ctx.block, ctx.window, ctx.nb
        K = b + 2 * w
        g = grad.reshape(B, nb, H, K, d).transpose(2, 3)  # (B, nb, K, H, d)
        padded = grad.new_empty(B, nb * b + 2 * w, H, d)  # (B, Lp, H, d)
        # window slot j·b.. of block i is padded row (i + j)·b..: slot 0 fills rows 0..nb·b
        padded[:, : nb * b] = g[:, :, :b].reshape(B, nb * b, H, d)
        padded[:, nb * b :] = 0
        for j in range(1, K // b):
            padded[:, j * b : j * b + nb * b] += g[:, :, j * b : (j + 1) * b].reshape(B, nb * b, H, d)
        return padded[:, w : w + L], None, None, None


def _blocked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    window: int,
    num_global: int,
    dropout_p: float,
    block_size: int | None = None,
) -> Tensor:
    """Exact banded attention computed block by block with SDPA.

    Shapes:
        q, k, v: (B, H, N, d), already rotated (any strides with a contiguous last dim)
        key_mask: (B, N) bool or None
        returns: (B, H, N, d)
    """
    B, H, N, d = q.shape
    G = min(num_global, N)
    L = N - G  # local (non-global) queries
    parts: list[Tensor] = []
    if G > 0:
        # global queries attend every key
        g_mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
        parts.append(_sdpa_no_nan(q[:, :, :G], k, v, g_mask, dropout_p))  # (B, H, G, d)
    if L > 0:
        ql, kl, vl = q[:, :, G:], k[:, :, G:], v[:, :, G:]  # (B, H, L, d)
        if window >= L - 1:
            # the band covers every local key: plain attention over [global; local] keys
            mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
            parts.append(_sdpa_no_nan(ql, k, v, mask, dropout_p))
        else:
            block = block_size or default_block_size(window)
            if (2 * window) % block:
                raise ValueError(f"banded_attention: block_size={block} must divide 2·window={2 * window}")
            km = None if key_mask is None else key_mask[:, G:]
            gk = None if G == 0 else (k[:, :, :G], v[:, :, :G], None if key_mask is None else key_mask[:, :G])
            # local queries with no real key in their band nor a global one: O(N) via cumsums;
            # without padding (or when no row is empty, the usual case) no guard is needed
            # (the padded tail of the last block counts: its rows must stay finite for backward)
            tail = -L % block
            empty = None
            if key_mask is not None:
                padded_mask = F.pad(key_mask, (0, tail), value=False)  # (B, N + tail)
                empty = _rows_without_keys(padded_mask, window, G)[:, G:]  # (B, L + tail)
            if empty is not None and not torch.compiler.is_compiling() and not bool(empty.any()):
                empty = None
            parts.append(_banded_blocks(ql, kl, vl, km, gk, empty, window, block, dropout_p))
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


def _banded_blocks(
    ql: Tensor,
    kl: Tensor,
    vl: Tensor,
    km: Tensor | None,
    gk: tuple[Tensor, Tensor, Tensor | None] | None,
    empty: Tensor | None,
    window: int,
    block: int,
    dropout_p: float,
) -> Tensor:
    """Local queries in blocks of ``block``; each attends its ``block + 2·window`` local keys
    (a strided view, no copy) plus the global keys.

    Shapes:
        ql, kl, vl: (B, H, L, d) local part; km: (B, L) bool or None (all real)
        gk: global keys, values (B, H, G, d) and their mask (B, G) or None; or None (G = 0)
        empty: (B, nb·block) bool, True at queries (and the padded tail of the last block)
            with no key to attend (their output is zeros, not NaN), or None when there are none
        returns: (B, H, L, d)
    """
    B, H, L, d = ql.shape
    w, b = window, block
    nb = math.ceil(L / b)
    tail = nb * b - L
    K = b + 2 * w  # keys per query block
    # queries: (B, H, L, d) → (B·nb, H, b, d); a view when B == 1 and L is a multiple of b
    qp = F.pad(ql, (0, 0, 0, tail)) if tail else ql
    q4 = qp.unflatten(2, (nb, b)).transpose(1, 2).reshape(B * nb, H, b, d)  # (B·nb, H, b, d)
    k4 = _KeyWindows.apply(kl.transpose(1, 2), b, w, nb)  # (B·nb, H, K, d)
    v4 = _KeyWindows.apply(vl.transpose(1, 2), b, w, nb)  # (B·nb, H, K, d)
    # key slot s of block i holds local position i·b - w + s, query r holds i·b + r: the band
    # |r + w - s| <= w is the same for every block; the real keys (not padding) differ
    r = torch.arange(b, device=ql.device)[:, None]
    s = torch.arange(K, device=ql.device)[None, :]
    band = (s >= r) & (s <= r + 2 * w)  # (b, K)
    real = torch.ones(B, L, dtype=torch.bool, device=ql.device) if km is None else km
    real = F.pad(real, (w, tail + w), value=False).unfold(1, K, b)  # (B, nb, K)
    mask = (band[None, None] & real[:, :, None, :]).view(B * nb, 1, b, K)  # (B·nb, 1, b, K)
    if gk is not None:
        kg, vg, gm = gk
        G = kg.shape[2]
        k4 = torch.cat([kg[:, None].expand(B, nb, H, G, d).reshape(B * nb, H, G, d), k4], dim=2)  # (B·nb, H, G+K, d)
        v4 = torch.cat([vg[:, None].expand(B, nb, H, G, d).reshape(B * nb, H, G, d), v4], dim=2)
        gm = torch.ones(B, G, dtype=torch.bool, device=ql.device) if gm is None else gm
        gmask = gm[:, None, None, :].expand(B, nb, b, G).reshape(B * nb, 1, b, G)  # (B·nb, 1, b, G)
        mask = torch.cat([gmask, mask], dim=-1)  # (B·nb, 1, b, G+K)
    if empty is not None:
        # let rows with no key attend every slot (finite softmax), then zero them below
        empty_blk = empty.reshape(B * nb, 1, b, 1)  # (B·nb, 1, b, 1)
        mask = mask | empty_blk
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, dropout_p=dropout_p)  # (B·nb, H, b, d)
    # (B·nb, H, b, d) → (B, H, L, d); SDPA's CPU and GPU kernels store it as (B·nb, b, H, d),
    # so this is a view there
    out = out.transpose(1, 2).reshape(B, nb * b, H, d)[:, :L]  # (B, L, H, d)
    if empty is not None:
        out = out.masked_fill(empty[:, :L, None, None], 0.0)
    return out.transpose(1, 2)  # (B, H, L, d)


_COMPILED_FLEX: Callable[..., Tensor] | None = None
_WARNED_FLEX_CPU_GRAD = False


def _flex_can_run(q: Tensor) -> bool:
    """Whether compiled flex_attention can run here; else warn once and use "blocked".

    Compiled flex_attention has no backward pass on CPU in torch 2.9 (inductor fails with
    "IndexError: tuple index out of range", pytorch/pytorch#169224), so a CPU call that needs
    gradients falls back to the block-local backend, which computes the same function.
    """
    global _WARNED_FLEX_CPU_GRAD
    if q.device.type != "cpu" or not (torch.is_grad_enabled() and q.requires_grad):
        return True
    if not _WARNED_FLEX_CPU_GRAD:
        warnings.warn(
            "MultiHeadAttention: flex_attention cannot backpropagate on CPU (pytorch/pytorch#169224); "
            "using the 'blocked' backend for calls that need gradients",
            stacklevel=4,
        )
        _WARNED_FLEX_CPU_GRAD = True
    return False


def _compiled_flex() -> Callable[..., Tensor]:
    """``torch.compile(flex_attention)``, compiled once per process on first use."""
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


def _band_block_mask(N: int, window: int, num_global: int, key_mask: Tensor | None, device: torch.device):
    """A flex ``BlockMask`` for the band + global pattern, built from block indices in O(N·w).

    Every kv tile that intersects a query tile's band (or holds a global key, or every tile
    for a tile holding a global query) is listed as a partial block; ``mask_mod`` then applies
    the exact pattern and the key padding inside it.
    """
    from torch.nn.attention.flex_attention import BlockMask

    T = _FLEX_BLOCK
    nq = math.ceil(N / T)
    q_start = torch.arange(nq, device=device) * T  # (nq,)
    q_end = (q_start + T).clamp_max(N) - 1
    lo = (q_start - window).clamp_min(0) // T  # first band tile
    hi = (q_end + window).clamp_max(N - 1) // T  # last band tile
    tiles = torch.arange(nq, device=device)[None, :]  # (1, nkv)
    n_global_tiles = math.ceil(num_global / T) if num_global > 0 else 0
    use = ((tiles >= lo[:, None]) & (tiles <= hi[:, None])) | (tiles < n_global_tiles)  # (nq, nkv)
    use = use | (q_start < num_global)[:, None]  # tiles holding global queries see everything
    # list the used tiles first (stable sort on "not used"), count them
    order = torch.sort((~use).to(torch.int8), dim=1, stable=True).indices.to(torch.int32)  # (nq, nkv)
    counts = use.sum(dim=1).to(torch.int32)  # (nq,)

    G = num_global
    if key_mask is None:

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return ((q_idx - kv_idx).abs() <= window) | (q_idx < G) | (kv_idx < G)

    else:

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            allowed = ((q_idx - kv_idx).abs() <= window) | (q_idx < G) | (kv_idx < G)
            return allowed & key_mask[b, kv_idx]

    return BlockMask.from_kv_blocks(
        counts[None, None], order[None, None], BLOCK_SIZE=T, mask_mod=mask_mod, seq_lengths=(N, N)
    )


def _flex_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, window: int, num_global: int) -> Tensor:
    """Banded attention through compiled ``flex_attention``.

    Shapes:
        q, k, v: (B, H, N, d); key_mask: (B, N) bool or None
        returns: (B, H, N, d)
    """
    B, H, N, d = q.shape
    block_mask = _band_block_mask(N, window, num_global, key_mask, q.device)
    out = _compiled_flex()(q, k, v, block_mask=block_mask)  # (B, H, N, d)
    if key_mask is not None:
        empty = _rows_without_keys(key_mask, window, num_global)  # (B, N)
        out = out.masked_fill(empty[:, None, :, None], 0.0)
    return out
