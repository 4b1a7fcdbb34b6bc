"""Multi-head attention over ``F.scaled_dot_product_attention`` with explicit masks: full
attention, or banded (sliding-window) self-attention with global tokens when built with a
``window``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmctx.layers.banded_attention import BACKENDS, banded_attention
from mmctx.layers.masks import attention_mask
from mmctx.layers.rope import RotaryEmbedding
from mmctx.types import check_shape

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with key-padding masks, optional RoPE and causality; with a
    ``window``, banded self-attention whose cost grows linearly with the length.

    ``window=None`` (default): full attention, one ``F.scaled_dot_product_attention`` call.
    ``window=w``: self-attention in which query ``i`` attends key ``j`` only when
    ``|i - j| <= w``, and the first ``num_global`` positions are *global* (they attend every
    key and every key attends them; Longformer). It is computed block by block
    (:func:`~mmctx.layers.banded_attention`), never building an N×N tensor, and with
    ``w >= N - 1`` it computes exactly what full attention computes. The band counts sequence
    indices; RoPE ``positions`` only rotate. A windowed module attends its own input only: no
    cross-attention, KV cache, causality or explicit ``attn_mask``.

    The parameters are the same with and without a window, so a state dict moves between them.

    Args:
        dim: width of the queries and of the output.
        num_heads: number of heads; ``dim`` must be divisible by it.
        dropout: attention-probability dropout (training only).
        context_dim: width of keys/values for cross-attention (default ``dim``).
        bias: whether the projections have a bias.
        rope: rotate queries and keys by their positions (RoPE).
        rope_base: RoPE wavelength base.
        window: band half-width (``>= 1``), or None for full attention.
        num_global: leading positions with global attention (needs a ``window``).
        backend: how a windowed module computes the band: ``"blocked"`` (compile-free
            block-local SDPA) or ``"flex"`` (compiled ``flex_attention``, no attention dropout;
            on CPU it falls back to ``"blocked"`` for calls that need gradients).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        context_dim: int | None = None,
        bias: bool = True,
        rope: bool = False,
        rope_base: float = 10000.0,
        window: int | None = None,
        num_global: int = 0,
        backend: str = "blocked",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"MultiHeadAttention: dim={dim} is not divisible by num_heads={num_heads}")
        if window is not None and window < 1:
            raise ValueError(f"MultiHeadAttention: window must be >= 1 (or None for full attention), got {window}")
        if num_global < 0:
            raise ValueError(f"MultiHeadAttention: num_global must be >= 0, got {num_global}")
        if backend not in BACKENDS:
            raise ValueError(f"MultiHeadAttention: backend must be one of {list(BACKENDS)}, got {backend!r}")
        if window is None and (num_global > 0 or backend != "blocked"):
            raise ValueError(
                f"MultiHeadAttention: num_global={num_global} and backend={backend!r} apply to windowed attention; "
                "set a window (or leave them at 0 and 'blocked')"
            )
        if window is not None and context_dim is not None and context_dim != dim:
            raise ValueError(
                f"MultiHeadAttention: a windowed module attends its own input; got context_dim={context_dim} != dim={dim}"
            )
        if backend == "flex" and dropout > 0:
            raise ValueError("MultiHeadAttention: the 'flex' backend has no attention dropout; use dropout=0.0")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.context_dim = context_dim or dim
        self.window = window
        self.num_global = num_global
        self.backend = backend
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(self.context_dim, 2 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim, rope_base) if rope else None

    def project_kv(self, source: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Keys and values of ``source``, keys RoPE-rotated when the module was built with ``rope``.

        Computed once, they can be passed back to :meth:`forward` as ``kv`` — a decoder caches
        cross-attention keys/values of its context this way, and appends self-attention
        keys/values of each new token to a KV cache.

        Shapes:
            source: (B, M, D_ctx) for cross-attention, (B, M, D) for self-attention
            positions: (M,) or (B, M) absolute RoPE positions (default 0..M-1)
            returns: keys and values, each (B, H, M, D/H)
        """
        B, M, _ = source.shape
        kv = self.kv_proj(source).view(B, M, 2, self.num_heads, self.head_dim)  # (B, M, 2, H, D/H)
        k, v = kv.permute(2, 0, 3, 1, 4)  # 2×(B, H, M, D/H)
        if self.rope is not None:
            k = self.rope(k, positions if positions is not None else torch.arange(M, device=source.device))
        return k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        context_positions: Tensor | None = None,
        kv: tuple[Tensor, Tensor] | None = None,
        query_offset: int = 0,
    ) -> Tensor:
        """Attend from ``x`` to ``context`` (or to ``x`` itself, or to precomputed ``kv``);
        with a ``window``, banded self-attention over ``x`` (only ``key_mask`` and
        ``positions`` apply).

        Shapes:
            x: (B, N, D)
            context: (B, M, D_ctx) or None for self-attention (M = N)
            key_mask: (B, M) bool, True at real keys
            attn_mask: (N, M) or (B, N, M) bool, True where query n may attend key m
            positions: (N,) or (B, N) query positions for RoPE (default
                ``query_offset + 0..N-1``)
            context_positions: (M,) or (B, M) key positions for RoPE (default 0..M-1, or
                the query positions for self-attention)
            kv: keys and values from :meth:`project_kv` (e.g. a KV cache), each
                (B, H, M, D/H), already rotated; replaces ``context``
            returns: (B, N, D); query rows that may attend no key (with a window: no real
                key in their band nor a global key) return zeros, not NaN

        ``query_offset`` is the absolute position of the first query: with ``is_causal``,
        query n attends keys at positions ``<= query_offset + n`` (bottom-right alignment
        of a short query against a long KV cache, not SDPA's top-left ``is_causal``).
        """
        check_shape("MultiHeadAttention x", x, ("B", "N", self.dim))
        if self.window is not None:
            cross_or_cached = context is not None or kv is not None or context_positions is not None
            if cross_or_cached or attn_mask is not None or is_causal or query_offset:
                raise ValueError(
                    f"MultiHeadAttention: built with window={self.window}, it is bidirectional self-attention only "
                    "(no context, context_positions, kv, attn_mask, is_causal or query_offset)"
                )
            return self._windowed(x, key_mask, positions)
        B, N, _ = x.shape
        if kv is not None and context is not None:
            raise ValueError("MultiHeadAttention: pass either context or kv, not both")
        q_pos: Tensor | None = None
        if self.rope is not None:
            q_pos = positions if positions is not None else torch.arange(N, device=x.device) + query_offset
        if kv is not None:
            k, v = kv
            check_shape("MultiHeadAttention kv[0]", k, (B, self.num_heads, "M", self.head_dim))
            check_shape("MultiHeadAttention kv[1]", v, tuple(k.shape))
        else:
            source = x if context is None else context
            if context is not None:
                check_shape("MultiHeadAttention context", context, (B, "M", self.context_dim))
            k_pos = context_positions if context_positions is not None else (q_pos if context is None else None)
            k, v = self.project_kv(source, k_pos)  # 2×(B, H, M, D/H)
        M = k.shape[2]
        if key_mask is not None:
            check_shape("MultiHeadAttention key_mask", key_mask, (B, M))
        q = self.q_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D/H)
        if q_pos is not None:
            q = self.rope(q, q_pos)
        if is_causal and N == 1 and query_offset >= M - 1:
            is_causal = False  # one query at the end of the cache: every key is in its past
        dropout_p = self.dropout if self.training else 0.0
        if is_causal and key_mask is None and attn_mask is None and N == M and query_offset == 0:
            # plain causal self-attention: let SDPA pick its fused causal kernel
            out, empty = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True), None
        else:
            mask, empty = attention_mask(
                key_mask, N, attn_mask, is_causal, query_offset=query_offset, num_keys=M, device=x.device
            )
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)  # rows with no key to attend: zero, not NaN
        out = out.transpose(1, 2).reshape(B, N, self.dim)  # (B, N, D)
        return self.out_proj(out)

    def _windowed(self, x: Tensor, key_mask: Tensor | None, positions: Tensor | None) -> Tensor:
        """Banded self-attention over ``x``; see :meth:`forward`.

        Shapes: x (B, N, D), key_mask (B, N) bool, positions (N,) or (B, N) → (B, N, D)
        """
        B, N, _ = x.shape
        if key_mask is not None:
            check_shape("MultiHeadAttention key_mask", key_mask, (B, N))
            if key_mask.dtype != torch.bool:
                raise ValueError(f"MultiHeadAttention key_mask: expected torch.bool, got {key_mask.dtype}")
        if positions is not None and positions.shape not in ((N,), (B, N)):
            raise ValueError(
                f"MultiHeadAttention positions: expected shape ({N},) or ({B}, {N}), got {tuple(positions.shape)}"
            )
        # one fused QKV projection (the weights of q_proj and kv_proj side by side, so the
        # state dict is that of full attention)
        weight = torch.cat([self.q_proj.weight, self.kv_proj.weight])  # (3D, D)
        bias = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.kv_proj.bias])
        qkv = F.linear(x, weight, bias).view(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, H, D/H)
        # unbind, not indexing: its backward stacks the three gradients in one copy
        if self.rope is not None:
            pos = positions if positions is not None else torch.arange(N, device=x.device)
            qk, v = qkv.split([2, 1], dim=2)  # (B, N, 2, H, D/H), (B, N, 1, H, D/H)
            q, k = self.rope(qk, pos, seq_dim=1).unbind(2)  # q and k in one rotation: 2×(B, N, H, D/H)
            v = v.squeeze(2)  # (B, N, H, D/H)
        else:
            q, k, v = qkv.unbind(2)  # 3×(B, N, H, D/H)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # 3×(B, H, N, D/H)
        dropout_p = self.dropout if self.training else 0.0
        out = banded_attention(q, k, v, key_mask, self.window, self.num_global, dropout_p, self.backend)
        out = out.transpose(1, 2).reshape(B, N, self.dim)  # (B, N, D)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        if self.window is None:
            return ""
        return f"window={self.window}, num_global={self.num_global}, backend={self.backend!r}"
