"""Sliding-window (banded) self-attention with global tokens: cost O(N·w), not O(N²).

Query ``i`` attends key ``j`` when ``|i - j| <= window``; the first ``num_global`` positions
are *global*: they attend every key and every query attends them (Longformer, Beltagy et
al. 2020). Two interchangeable backends compute exactly that pattern:

* ``"blocked"`` (default, compile-free): the non-global part of the sequence is cut into
  blocks of ``window`` queries; block ``b`` attends the keys of blocks ``b-1, b, b+1`` (which
  contain its whole band) plus the global keys, through one batched
  ``F.scaled_dot_product_attention`` call with an exact band mask of shape
  (B·N/w, 1, w, 3w + G). Memory and time are O(N·w); no N×N tensor is ever built.
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
from torch import Tensor, nn

from mmctx.layers.block import FeedForward
from mmctx.layers.rope import RotaryEmbedding
from mmctx.types import check_shape

__all__ = ["SlidingWindowAttention", "SlidingWindowBlock", "SlidingWindowEncoder", "sliding_window_mask"]

BACKENDS: tuple[str, ...] = ("blocked", "flex")
_FLEX_BLOCK = 128  # flex_attention's tile size


def sliding_window_mask(
    num_tokens: int, window: int, num_global: int = 0, device: torch.device | None = None
) -> Tensor:
    """The dense (N, N) boolean pattern of :class:`SlidingWindowAttention` (True = may attend).

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


class SlidingWindowAttention(nn.Module):
    """Multi-head self-attention restricted to a ±``window`` band plus global tokens.

    The parameters are named as in :class:`~mmctx.layers.MultiHeadAttention` (``q_proj``,
    ``kv_proj``, ``out_proj``), so a state dict moves between the two; with ``window >= N - 1``
    both compute the same function.

    Args:
        dim: model width D; must be divisible by ``num_heads``.
        num_heads: attention heads H.
        window: each query attends keys within ±``window`` positions (``>= 1``).
        num_global: the first ``num_global`` positions attend everywhere and are attended by all.
        dropout: attention-probability dropout (training only; ``"blocked"`` backend only).
        rope: rotate queries and keys by their positions (RoPE).
        rope_base: RoPE wavelength base.
        bias: whether the projections have a bias.
        backend: ``"blocked"`` (compile-free block-local SDPA) or ``"flex"`` (compiled
            ``flex_attention``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        num_global: int = 0,
        dropout: float = 0.0,
        rope: bool = True,
        rope_base: float = 10000.0,
        bias: bool = True,
        backend: str = "blocked",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"SlidingWindowAttention: dim={dim} is not divisible by num_heads={num_heads}")
        if window < 1:
            raise ValueError(f"SlidingWindowAttention: window must be >= 1, got {window}")
        if num_global < 0:
            raise ValueError(f"SlidingWindowAttention: num_global must be >= 0, got {num_global}")
        if backend not in BACKENDS:
            raise ValueError(f"SlidingWindowAttention: backend must be one of {list(BACKENDS)}, got {backend!r}")
        if backend == "flex" and dropout > 0:
            raise ValueError("SlidingWindowAttention: the 'flex' backend has no attention dropout; use dropout=0.0")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.num_global = num_global
        self.dropout = dropout
        self.backend = backend
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim, rope_base) if rope else None

    def forward(self, x: Tensor, key_mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """Banded self-attention over ``x``.

        Shapes:
            x: (B, N, D)
            key_mask: (B, N) bool, True at real positions (padding is never attended)
            positions: (N,) or (B, N) RoPE positions (default 0..N-1); the band itself is
                always over sequence indices
            returns: (B, N, D); query rows with no real key in their band (nor global key)
                return zeros, not NaN
        """
        check_shape("SlidingWindowAttention x", x, ("B", "N", self.dim))
        B, N, _ = x.shape
        if key_mask is not None:
            check_shape("SlidingWindowAttention key_mask", key_mask, (B, N))
            if key_mask.dtype != torch.bool:
                raise ValueError(f"SlidingWindowAttention key_mask: expected torch.bool, got {key_mask.dtype}")
        if positions is not None and positions.shape not in ((N,), (B, N)):
            raise ValueError(
                f"SlidingWindowAttention positions: expected shape ({N},) or ({B}, {N}), got {tuple(positions.shape)}"
            )
        q = self.q_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D/H)
        k, v = self.kv_proj(x).view(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 2×(B, H, N, D/H)
        if self.rope is not None:
            pos = positions if positions is not None else torch.arange(N, device=x.device)
            q, k = self.rope(q, pos), self.rope(k, pos)
        dropout_p = self.dropout if self.training else 0.0
        if self.backend == "flex" and _flex_can_run(q):
            out = _flex_attention(q, k, v, key_mask, self.window, self.num_global)
        else:
            out = _blocked_attention(q, k, v, key_mask, self.window, self.num_global, dropout_p)
        out = out.transpose(1, 2).reshape(B, N, self.dim)  # (B, N, D)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        return f"window={self.window}, num_global={self.num_global}, backend={self.backend!r}"


def _sdpa_no_nan(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> Tensor:
    """SDPA where query rows allowed no key give zeros (SDPA itself would give NaN).

    Shapes: q (..., Q, d), k/v (..., K, d), mask (..., 1 or H, Q, K) bool → (..., Q, d)
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    empty = ~mask.any(dim=-1, keepdim=True)  # (..., Q, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty, dropout_p=dropout_p)
    return out.masked_fill(empty, 0.0)


def _blocked_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, window: int, num_global: int, dropout_p: float
) -> Tensor:
    """Exact banded attention computed block by block with SDPA.

    Shapes:
        q, k, v: (B, H, N, d), already rotated
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
        km = key_mask[:, G:] if key_mask is not None else torch.ones(B, L, dtype=torch.bool, device=q.device)
        if window >= L - 1:
            # the band covers every local key: plain attention over [global; local] keys
            mask = torch.cat([key_mask[:, :G], km], dim=1) if key_mask is not None else None  # (B, N)
            mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N)
            parts.append(_sdpa_no_nan(ql, k, v, mask, dropout_p))
        else:
            parts.append(_banded_blocks(ql, kl, vl, km, q, k, v, key_mask, window, G, dropout_p))
    return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


def _banded_blocks(
    ql: Tensor,
    kl: Tensor,
    vl: Tensor,
    km: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    window: int,
    G: int,
    dropout_p: float,
) -> Tensor:
    """Local queries in blocks of ``window``; each attends 3 blocks of local keys + G global keys.

    Shapes:
        ql, kl, vl: (B, H, L, d) local part; km: (B, L) bool
        q, k, v: (B, H, N, d) whole sequence (its first G keys are the global ones)
        returns: (B, H, L, d)
    """
    B, H, L, d = ql.shape
    w = window
    nb = math.ceil(L / w)
    tail = nb * w - L
    q_blk = F.pad(ql, (0, 0, 0, tail)).view(B, H, nb, w, d)  # (B, H, nb, w, d)
    # keys/values padded by one block on each side, then 3-block windows with step w
    k_blk = F.pad(kl, (0, 0, w, tail + w)).unfold(2, 3 * w, w).transpose(-1, -2)  # (B, H, nb, 3w, d)
    v_blk = F.pad(vl, (0, 0, w, tail + w)).unfold(2, 3 * w, w).transpose(-1, -2)  # (B, H, nb, 3w, d)
    km_blk = F.pad(km, (w, tail + w), value=False).unfold(1, 3 * w, w)  # (B, nb, 3w)
    # key slot s of a block holds local position (b-1)·w + s; query r holds b·w + r
    rel = torch.arange(3 * w, device=ql.device)[None, :] - (torch.arange(w, device=ql.device)[:, None] + w)  # (w, 3w)
    band = rel.abs() <= w  # (w, 3w)
    mask = band[None, None] & km_blk[:, :, None, :]  # (B, nb, w, 3w)
    if G > 0:
        kg = k[:, :, None, :G].expand(B, H, nb, G, d)  # (B, H, nb, G, d)
        vg = v[:, :, None, :G].expand(B, H, nb, G, d)
        k_blk = torch.cat([kg, k_blk], dim=3)  # (B, H, nb, G+3w, d)
        v_blk = torch.cat([vg, v_blk], dim=3)
        gm = key_mask[:, :G] if key_mask is not None else torch.ones(B, G, dtype=torch.bool, device=ql.device)
        mask = torch.cat([gm[:, None, None, :].expand(B, nb, w, G), mask], dim=-1)  # (B, nb, w, G+3w)
    K = k_blk.shape[3]
    # fold the blocks into SDPA's batch dimension (4-D inputs select the fused CPU/GPU kernels)
    q4 = q_blk.transpose(1, 2).reshape(B * nb, H, w, d)  # (B·nb, H, w, d)
    k4 = k_blk.transpose(1, 2).reshape(B * nb, H, K, d)  # (B·nb, H, K, d)
    v4 = v_blk.transpose(1, 2).reshape(B * nb, H, K, d)
    m4 = mask.reshape(B * nb, 1, w, K)  # (B·nb, 1, w, K)
    out = _sdpa_no_nan(q4, k4, v4, m4, dropout_p)  # (B·nb, H, w, d)
    out = out.view(B, nb, H, w, d).transpose(1, 2).reshape(B, H, nb * w, d)  # (B, H, nb·w, d)
    return out[:, :, :L]


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
            "SlidingWindowAttention: flex_attention cannot backpropagate on CPU (pytorch/pytorch#169224); "
            "using the 'blocked' backend for calls that need gradients",
            stacklevel=3,
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


class SlidingWindowBlock(nn.Module):
    """Pre-norm block: sliding-window self-attention and feed-forward, each residual.

    Parameter names match :class:`~mmctx.layers.TransformerBlock` (without cross-attention),
    so a full-attention block's state dict loads into it.

    Args:
        dim: model width D.
        num_heads: attention heads H.
        window: attention band half-width (±``window`` positions).
        num_global: leading positions with global attention.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout in attention and feed-forward.
        rope: RoPE positions in the self-attention.
        backend: ``"blocked"`` or ``"flex"`` (see :class:`SlidingWindowAttention`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        num_global: int = 0,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rope: bool = True,
        backend: str = "blocked",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SlidingWindowAttention(dim, num_heads, window, num_global, dropout, rope=rope, backend=backend)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """Shapes:
            x: (B, N, D)
            mask: (B, N) bool key-padding mask of ``x``
            positions: (N,) or (B, N) RoPE positions
            returns: (B, N, D)
        """
        x = x + self.drop(self.attn(self.norm1(x), key_mask=mask, positions=positions))
        return x + self.ff(self.norm2(x))


class SlidingWindowEncoder(nn.Module):
    """A stack of :class:`SlidingWindowBlock` with a final LayerNorm: O(N·w) per layer.

    A drop-in for :class:`~mmctx.layers.TransformerEncoder` (same ``forward`` signature and
    parameter names); with ``window >= N - 1`` they compute the same function. The receptive
    field grows by ``window`` per layer (global tokens relay information across any distance).

    Args:
        dim: model width D.
        num_layers: number of blocks.
        num_heads: attention heads H.
        window: attention band half-width (±``window`` positions).
        num_global: leading positions with global attention.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability.
        rope: RoPE positions in self-attention.
        backend: ``"blocked"`` or ``"flex"``.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        window: int,
        num_global: int = 0,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rope: bool = True,
        backend: str = "blocked",
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SlidingWindowBlock(dim, num_heads, window, num_global, mlp_ratio, dropout, rope, backend)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """Shapes: x (B, N, D), mask (B, N) bool, positions (N,) or (B, N) → (B, N, D)."""
        for block in self.blocks:
            x = block(x, mask=mask, positions=positions)
        return self.norm(x)
