"""Autoregressive text decoder: causal self-attention (RoPE) + cross-attention into the context.

Teacher forcing runs :meth:`TextDecoder.forward` over whole sequences; generation runs
:meth:`TextDecoder.step` over a :class:`DecoderCache` — self-attention keys/values appended
token by token, cross-attention keys/values of the context computed once per call — driven
by the searches in :mod:`mmctx.heads.generation` (greedy, sampling, beam search).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmctx.heads.generation import LogitsProcessing, beam_search, greedy_search
from mmctx.layers import FeedForward, MultiHeadAttention
from mmctx.types import ExtendedContext, check_shape

__all__ = ["TextDecoder", "DecoderBlock", "DecoderCache", "length_scale"]

_STRATEGIES = ("greedy", "beam", "sample")


@dataclass
class _LayerCache:
    """One layer's keys and values: self-attention (a static buffer filled token by token)
    and cross-attention (fixed)."""

    cross_kv: tuple[Tensor, Tensor]  # 2×(B, H, M, D/H)
    #: the block's projections as (weight (D_in, D_out) contiguous, bias), see _decode_weights
    weights: dict[str, tuple[Tensor, Tensor | None]]
    k: Tensor | None = None  # (B, H, capacity, D/H), allocated on first use
    v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor, offset: int, capacity: int) -> tuple[Tensor, Tensor]:
        """Write keys/values of positions ``offset..offset+t-1``; return those of ``0..offset+t-1``.

        The buffer is allocated once, at full capacity: no concatenation, no regrowth.

        Shapes: k, v (B, H, t, D/H) → 2×(B, H, offset + t, D/H)
        """
        if self.k is None or self.v is None:
            # allocated here, not up front, so it takes the dtype the layer computes in (autocast)
            self.k = k.new_zeros(k.shape[0], k.shape[1], capacity, k.shape[3])
            self.v = v.new_zeros(v.shape[0], v.shape[1], capacity, v.shape[3])
        end = offset + k.shape[2]
        self.k[:, :, offset:end] = k
        self.v[:, :, offset:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


@dataclass
class DecoderCache:
    """KV cache of a :class:`TextDecoder` for one batch of contexts (one ``generate`` call).

    Build it with :meth:`TextDecoder.init_cache` and feed tokens with
    :meth:`TextDecoder.step`; ``length`` tokens have been processed so far. Everything a
    step would otherwise recompute is computed here once: the cross-attention keys/values of
    the context, its attention mask and the rows with no real context token, and the RoPE
    angles of every position the cache can hold.

    Attributes:
        layers: per-layer keys and values.
        context_mask: (B, M) bool, True at real context tokens; None when all are real.
        capacity: the most tokens the cache holds.
        length: tokens processed so far; the next one sits at absolute position ``length``.
        batch_size: rows decoded (B, or B * K for beam search).
        context_bias: (B, 1, 1, M) additive cross-attention mask, 0 at real context tokens
            and ``-inf`` at padding (all 0 in a row with no real token); None when all are real.
        empty_rows: (B, 1, 1, 1) bool, True for rows with no real context token (their
            cross-attention output is zero, as in :meth:`TextDecoder.forward`); None if none.
        rope_cos: (capacity, D/H) cosines of the RoPE angles of positions ``0..capacity-1``,
            each repeated for the two channels of its pair.
        rope_sin: (capacity, D/H) their sines, ``-sin, +sin`` per pair (see ``_rotate``).
        output_weight: (D, V) the tied output projection (the embedding, transposed
            contiguous); None with an untied ``lm_head``.
    """

    layers: list[_LayerCache]
    context_mask: Tensor | None
    capacity: int
    length: int = 0
    batch_size: int = 0
    context_bias: Tensor | None = None
    empty_rows: Tensor | None = None
    rope_cos: Tensor | None = None
    rope_sin: Tensor | None = None
    output_weight: Tensor | None = None

    def reorder(self, rows: Tensor) -> None:
        """Make row ``i`` continue row ``rows[i]`` (beam search re-ranking its beams).

        Only the self-attention keys/values move: ``rows`` must keep every row within its
        own context (beams of one sample share it), so the cross-attention ones stay.

        Shapes: rows (B,) long
        """
        n = self.length
        for layer in self.layers:
            if layer.k is not None and layer.v is not None:
                layer.k[:, :, :n] = layer.k[rows, :, :n]
                layer.v[:, :, :n] = layer.v[rows, :, :n]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE with precomputed angles, bit for bit the arithmetic of
    :class:`~mmctx.layers.RotaryEmbedding` (``x1 cos - x2 sin, x1 sin + x2 cos`` per channel
    pair) in four kernels: ``cos`` repeats each angle's cosine for both channels of a pair,
    ``sin`` holds ``-sin, +sin``, so the pair-swapped input times ``sin`` is the second term.

    Shapes: x (..., t, D/H), cos and sin (t, D/H) → (..., t, D/H)
    """
    xf = x.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x2, x1) in each pair
    return (xf * cos + swapped * sin).to(x.dtype)


def _decode_weights(linear: nn.Linear, *more: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """Weights of one or more stacked linear layers, transposed to (D_in, D_out) and contiguous.

    ``torch.addmm`` on a few rows runs 10-30 % faster against this layout than ``F.linear``
    against the (D_out, D_in) one, with bit-identical results; the copy is made once per
    parameter version (:meth:`TextDecoder._step_weights`) and, under autograd, gradients
    still reach the layers' parameters.
    """
    layers = (linear, *more)
    weight = torch.cat([m.weight for m in layers]).t().contiguous()  # (D_in, sum D_out)
    bias = None if linear.bias is None else torch.cat([m.bias for m in layers])
    return weight, bias


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight + bias`` for weights from :func:`_decode_weights`.

    Shapes: x (B, t, D_in), weight (D_in, D_out), bias (D_out,) → (B, t, D_out)
    """
    flat = x.reshape(-1, x.shape[-1])  # (B*t, D_in)
    out = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
    return out.view(*x.shape[:-1], weight.shape[1])


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """Softmax attention of a decoding step's few queries by explicit products (no dropout),
    for the compiled static step (:meth:`DecoderBlock.decode_static`).

    Under ``torch.compile`` Inductor lowers the two products of one query (a batched
    matrix-vector product) to its own reduction loops and fuses the softmax, the mask and
    the cache write around them, where SDPA stays an opaque call to the CPU flash kernel
    whose fixed set-up dominates at decoding sizes (batch 8, one query against tens of keys;
    8 calls a step in a 4-layer decoder). Eagerly, SDPA is the faster of the two (these
    products copy the cache's strided keys), so the eager step keeps SDPA.

    Shapes:
        q: (B, H, t, d); k, v: (B, H, L, d)
        bias: additive mask broadcastable to (B, H, t, L) (0 or ``-inf``), or None
        returns: (B, H, t, d)
    """
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, t, L)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(-1) @ v


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: causal self-attention (RoPE), cross-attention, feed-forward.

    Args:
        dim: model width D.
        num_heads: attention heads H.
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout in attention, feed-forward and on the residual branches.
        context_dim: width of the context cross-attended (default ``dim``).
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, context_dim: int | None = None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=dropout, rope=True)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout=dropout, context_dim=context_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        context: Tensor,
        context_mask: Tensor | None = None,
        token_mask: Tensor | None = None,
        context_scale: Tensor | None = None,
    ) -> Tensor:
        """Run the block over whole sequences (teacher forcing, or decoding without a cache).

        Shapes:
            x: (B, T, D)
            positions: (T,) or (B, T) absolute RoPE positions
            context: (B, M, D_ctx)
            context_mask: (B, M) bool, True at real context tokens
            token_mask: (B, T) bool, True at real tokens
            context_scale: (B,) factor on each row's cross-attention logits (None: 1); see
                :func:`length_scale`
            returns: (B, T, D)
        """
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, key_mask=token_mask, is_causal=True, positions=positions))
        h = self.cross_norm(x)
        x = x + self.drop(self.cross_attn(h, kv=self.cross_kv(context, context_scale), key_mask=context_mask))
        return x + self.ff(self.norm2(x))

    def cross_kv(self, context: Tensor, context_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The cross-attention keys and values of ``context``, the keys times ``context_scale``
        (which multiplies every logit ``q . k`` of the row by it).

        Shapes: context (B, M, D_ctx), context_scale (B,) → 2×(B, H, M, D/H)
        """
        k, v = self.cross_attn.project_kv(context)  # 2×(B, H, M, D/H)
        if context_scale is not None:
            k = k * context_scale.to(k.dtype)[:, None, None, None]
        return k, v

    def decode(self, x: Tensor, layer: _LayerCache, cache: DecoderCache, self_mask: Tensor | None) -> Tensor:
        """Run the block over new tokens against its layer of a KV cache.

        The same arithmetic as :meth:`forward`, with the per-step work stripped: one fused
        query/key/value projection, RoPE angles and the context mask read from the cache
        (computed once per ``generate`` call), keys/values written into the preallocated
        buffer and attended in place, and no input checks (:meth:`TextDecoder.step` did them).

        Shapes:
            x: (B, t, D), the tokens at positions ``cache.length .. cache.length + t - 1``
            self_mask: (t, cache.length + t) bool, True where a new token may attend a key;
                None when t == 1 (the last token attends every key)
            returns: (B, t, D)
        """
        attn = self.self_attn
        w = layer.weights
        B, t, D = x.shape
        H, Dh = attn.num_heads, attn.head_dim
        offset = cache.length
        end = offset + t
        drop = self.training  # dropout modules are only called when they do something

        h = self.norm1(x)
        qkv = _linear(h, *w["qkv"]).view(B, t, 3, H, Dh).permute(2, 0, 3, 1, 4)  # (3, B, H, t, D/H)
        qk = qkv[:2]
        if attn.rope is not None:
            qk = _rotate(qk, cache.rope_cos[offset:end], cache.rope_sin[offset:end])  # (2, B, H, t, D/H)
        k_all, v_all = layer.append(qk[1], qkv[2], offset, cache.capacity)  # 2×(B, H, end, D/H)
        a = F.scaled_dot_product_attention(
            qk[0], k_all, v_all, attn_mask=self_mask, dropout_p=attn.dropout if drop else 0.0
        )  # (B, H, t, D/H)
        a = _linear(a.transpose(1, 2).reshape(B, t, D), *w["out"])  # (B, t, D)
        x = x + (self.drop(a) if drop else a)

        return self._decode_cross_ff(x, layer, cache.context_bias, cache.empty_rows)

    def decode_static(
        self,
        x: Tensor,
        layer: _LayerCache,
        position: Tensor,
        key_bias: Tensor,
        cos: Tensor,
        sin: Tensor,
        context_bias: Tensor | None,
        empty_rows: Tensor | None,
    ) -> Tensor:
        """One new token against full-capacity buffers, with fixed shapes (for ``torch.compile``).

        Unlike :meth:`decode`, nothing depends on how many tokens the cache holds as a Python
        number: the token's position is a tensor, its keys/values are written at that index of
        the preallocated buffers, and the query attends the *whole* buffer with ``key_bias``
        hiding the positions not filled yet. So one compiled graph serves every step. Eval
        mode only (no dropout).

        Shapes:
            x: (B, 1, D); position: (1,) long; key_bias: (1, 1, 1, capacity) float, 0 at positions
            ``<= position`` and ``-inf`` after; cos, sin: (1, D/H) the RoPE angles of ``position``
            returns: (B, 1, D)
        """
        attn = self.self_attn
        B, t, D = x.shape
        H, Dh = attn.num_heads, attn.head_dim
        h = self.norm1(x)
        qkv = _linear(h, *layer.weights["qkv"]).view(B, t, 3, H, Dh).permute(2, 0, 3, 1, 4)  # (3, B, H, 1, D/H)
        qk = qkv[:2]
        if attn.rope is not None:
            qk = _rotate(qk, cos, sin)  # (2, B, H, 1, D/H)
        layer.k.index_copy_(2, position, qk[1])  # (B, H, capacity, D/H), filled in place
        layer.v.index_copy_(2, position, qkv[2])
        a = _attend(qk[0], layer.k, layer.v, key_bias)  # (B, H, 1, D/H)
        x = x + _linear(a.transpose(1, 2).reshape(B, t, D), *layer.weights["out"])  # (B, 1, D)
        return self._decode_cross_ff(x, layer, context_bias, empty_rows, products=True)

    def _decode_cross_ff(
        self,
        x: Tensor,
        layer: _LayerCache,
        context_bias: Tensor | None,
        empty_rows: Tensor | None,
        products: bool = False,
    ) -> Tensor:
        """The cross-attention and feed-forward half of :meth:`decode`; ``products``: attend
        by :func:`_attend` (the compiled static step) instead of SDPA. Shapes: x (B, t, D) → (B, t, D)."""
        cross, w = self.cross_attn, layer.weights
        B, t, D = x.shape
        H, Dh = cross.num_heads, cross.head_dim
        drop = self.training
        h = self.cross_norm(x)
        q = _linear(h, *w["cross_q"]).view(B, t, H, Dh).transpose(1, 2)  # (B, H, t, D/H)
        mask = context_bias
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)  # SDPA wants a float mask in the queries' dtype (autocast)
        if products:
            c = _attend(q, *layer.cross_kv, mask)  # (B, H, t, D/H)
        else:
            c = F.scaled_dot_product_attention(
                q, *layer.cross_kv, attn_mask=mask, dropout_p=cross.dropout if drop else 0.0
            )  # (B, H, t, D/H)
        if empty_rows is not None:
            c = c.masked_fill(empty_rows, 0.0)  # rows with no context token: zero, as in forward
        c = _linear(c.transpose(1, 2).reshape(B, t, D), *w["cross_out"])  # (B, t, D)
        x = x + (self.drop(c) if drop else c)

        if drop:
            return x + self.ff(self.norm2(x))
        ff = self.ff.net  # Linear, GELU, Dropout, Linear, Dropout
        return x + _linear(ff[1](_linear(self.norm2(x), *w["ff_in"])), *w["ff_out"])


class TextDecoder(nn.Module):
    """Autoregressive transformer text decoder that cross-attends an extended context.

    Pre-norm blocks of causal self-attention with RoPE (absolute positions, also under the
    KV cache), cross-attention into ``context.x`` restricted to ``context.mask``, and a
    feed-forward; a final LayerNorm and an output projection tied to the input embedding.

    Special-token ids come from the tokenizer (the CLI fills them from the data module);
    never write them by hand in a config.

    Args:
        vocab_size: V. Left unset in YAML configs: the CLI fills it from the data module.
        dim: model width D.
        num_layers: decoder blocks.
        num_heads: attention heads H (``dim / num_heads`` must be even for RoPE).
        mlp_ratio: feed-forward width as a multiple of ``dim``.
        dropout: dropout probability (embeddings, attention, feed-forward).
        context_dim: width of the context (default ``dim``).
        max_seq_len: the longest token sequence, BOS included, that :meth:`forward` accepts
            and :meth:`generate` produces (BOS + ``max_new_tokens``).
        pad_id: padding token; written after EOS by :meth:`generate`, never generated.
        bos_id: start token every sequence begins with; needed by :meth:`generate`, never
            generated.
        eos_id: end token; None: :meth:`generate` always produces ``max_new_tokens``.
        tie_embeddings: share the input embedding with the output projection.
        length_scale_ref: length-scaled cross-attention (None: off). With a reference
            length ``L`` (the longest context trained on), every cross-attention logit of a
            context with ``M > L`` real tokens is multiplied by ``log(M) / log(L)``
            (:func:`length_scale`; log-length attention scaling as in Qwen's ``logn`` and
            "scalable softmax", Nakanishi 2025); contexts of at most ``L`` tokens are
            untouched, so training is the plain decoder's. A token whose logit beats ``M``
            others by ``Δ`` gets ``e^Δ / (e^Δ + M)`` of the plain softmax, which vanishes as
            the context grows past what training saw; scaled it gets
            ``M^(Δ/log L) / (M^(Δ/log L) + M)``, which *grows* with ``M`` once ``Δ > log(L)``.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        context_dim: int | None = None,
        max_seq_len: int = 64,
        pad_id: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        tie_embeddings: bool = True,
        length_scale_ref: int | None = None,
    ) -> None:
        super().__init__()
        if length_scale_ref is not None and length_scale_ref < 2:
            raise ValueError(f"TextDecoder: length_scale_ref must be an int >= 2 (or None: off), got {length_scale_ref!r}")
        self.length_scale_ref = length_scale_ref
        if vocab_size is None or vocab_size < 2:
            raise ValueError(
                f"TextDecoder: vocab_size must be an int >= 2, got {vocab_size!r} "
                "(from the CLI it is filled in from the data module's tokenizer)"
            )
        specials = {"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id}
        for name, value in specials.items():
            if value is not None and not 0 <= value < vocab_size:
                raise ValueError(
                    f"TextDecoder: {name}={value} is out of range, expected 0 <= {name} < vocab_size={vocab_size} "
                    "(special-token ids come from the tokenizer)"
                )
        given = {name: value for name, value in specials.items() if value is not None}
        if len(set(given.values())) != len(given):
            # pad == eos: a loss ignoring pad targets never teaches EOS; pad == bos: masking
            # pads masks BOS; bos == eos: the start token would read as "stop"
            raise ValueError(f"TextDecoder: special-token ids must be distinct, got {given}")
        if max_seq_len < 2:
            raise ValueError(f"TextDecoder: max_seq_len must be >= 2 (BOS + one token), got {max_seq_len}")
        self.vocab_size = vocab_size
        self.dim = dim
        self.context_dim = context_dim or dim
        self.max_seq_len = max_seq_len
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.tie_embeddings = tie_embeddings
        self.embed = nn.Embedding(vocab_size, dim)
        # unit-norm rows: with tied embeddings the initial logits are O(1), not O(sqrt(D))
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(dim, num_heads, mlp_ratio, dropout, self.context_dim) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.lm_head = None if tie_embeddings else nn.Linear(dim, vocab_size, bias=False)

    # ------------------------------------------------------------------ teacher forcing

    def forward(self, tokens: Tensor, context: ExtendedContext, token_mask: Tensor | None = None) -> Tensor:
        """Next-token logits at every position (teacher forcing).

        Args:
            tokens: input ids, each sequence starting with BOS (targets are ``tokens``
                shifted left, which the trainer builds).
            context: the extended context to cross-attend; ``context.mask`` hides padding.
            token_mask: True at real tokens. Padding (right or left) never changes the
                logits at real positions: RoPE positions count real tokens only.

        Shapes:
            tokens: (B, T) long, T <= max_seq_len
            context.x: (B, M, D_ctx), context.mask: (B, M) bool
            token_mask: (B, T) bool
            returns: logits (B, T, V)
        """
        return self._logits(self._hidden(tokens, context, token_mask))

    def score(self, tokens: Tensor, context: ExtendedContext, length_penalty: float = 0.0) -> Tensor:
        """Log-probability of generated sequences, as beam search scores them.

        Args:
            tokens: ids as returned by :meth:`generate` (no BOS; tokens after the first EOS
                are ignored).
            context: the contexts they were generated from.
            length_penalty: divide by ``length ** length_penalty``, length counting the
                tokens up to and including the first EOS.

        Shapes:
            tokens: (B, T) long
            returns: (B,) float
        """
        check_shape("TextDecoder.score tokens", tokens, (context.x.shape[0], "T"))
        bos = self._require_bos("score")
        inputs = torch.cat([torch.full_like(tokens[:, :1], bos), tokens[:, :-1]], 1)  # (B, T)
        logp = self(inputs, context).float().log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)
        valid = torch.ones_like(tokens, dtype=torch.bool)
        if self.eos_id is not None:
            is_eos = (tokens == self.eos_id).long()
            valid = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first EOS
        lengths = valid.sum(1).clamp_min(1)
        return logp.masked_fill(~valid, 0.0).sum(1) / lengths.float() ** length_penalty

    # ------------------------------------------------------------------ incremental decoding

    def init_cache(self, context: ExtendedContext, capacity: int | None = None) -> DecoderCache:
        """Start a KV cache for ``context``: its cross-attention keys/values are computed here.

        Args:
            context: the contexts to decode from.
            capacity: the most tokens (BOS included) that will be fed (default max_seq_len).

        Shapes:
            context.x: (B, M, D_ctx), context.mask: (B, M) bool
        """
        self._check_context(context, None)
        return self._init_cache(context.x, context.mask, capacity or self.max_seq_len)

    def step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Feed the next tokens (one, or a prompt of several) through the KV cache.

        The tokens take the absolute positions ``cache.length .. cache.length + t - 1``:
        each attends the cached keys and the new ones at or before its own position, so
        the logits equal those of :meth:`forward` over the whole sequence.

        Shapes:
            tokens: (B, t) long
            returns: logits (B, t, V)
        """
        check_shape("TextDecoder.step tokens", tokens, (cache.batch_size, "t"))
        t = tokens.shape[1]
        if cache.length + t > cache.capacity:
            raise ValueError(
                f"TextDecoder.step: the cache holds {cache.capacity} tokens, {cache.length} are in it, "
                f"got {t} more"
            )
        offset = cache.length
        self_mask = None
        if t > 1:  # a prompt: new token i (position offset + i) attends keys at positions <= offset + i
            keys = torch.arange(offset + t, device=tokens.device)
            self_mask = keys[None, :] <= torch.arange(offset, offset + t, device=tokens.device)[:, None]  # (t, offset+t)
        x = self.drop(self.embed(tokens))  # (B, t, D)
        for block, layer in zip(self.blocks, cache.layers):
            x = block.decode(x, layer, cache, self_mask)
        cache.length += t
        if cache.output_weight is None:
            return self._logits(x)
        return _linear(self.norm(x), cache.output_weight, None)  # (B, t, V): the tied projection, transposed

    def static_step(
        self, tokens: Tensor, cache: DecoderCache, compiled: bool = False, greedy_banned: Tensor | None = None
    ) -> Tensor:
        """Feed ONE next token through the cache with fixed shapes (see :meth:`DecoderBlock.decode_static`).

        The same logits as :meth:`step` (up to float rounding: the attention runs over the
        whole buffer with the unfilled positions masked), but every call has the same shapes
        and no Python branch on the cache's length, so ``compiled=True`` runs one
        ``torch.compile``'d graph (``fullgraph``, static shapes) for every step of a
        ``generate`` call and of later calls with the same batch size, capacity and context
        length. The buffers are allocated at full capacity on the first call. Eval mode only.

        ``greedy_banned`` (the ids greedy search never picks, e.g. BOS and PAD; may be empty)
        returns the greedy next token instead of the logits: the ban and the arg-max run inside
        the same graph (what :func:`~mmctx.heads.generation.greedy_search` does to the logits
        without repetition penalty or n-gram ban), so a step is one graph call.

        Shapes:
            tokens: (B, 1) long
            greedy_banned: (n,) long, or None
            returns: logits (B, 1, V); with ``greedy_banned``, next tokens (B, 1) long
        """
        check_shape("TextDecoder.static_step tokens", tokens, (cache.batch_size, 1))
        if self.training:
            raise ValueError("TextDecoder.static_step: eval mode only (no dropout); call eval() first")
        if cache.length + 1 > cache.capacity:
            raise ValueError(f"TextDecoder.static_step: the cache holds {cache.capacity} tokens and is full")
        for block, layer in zip(self.blocks, cache.layers):
            if layer.k is None or layer.v is None:
                H, Dh = block.self_attn.num_heads, block.self_attn.head_dim
                k, _ = layer.cross_kv
                layer.k = k.new_zeros(cache.batch_size, H, cache.capacity, Dh)  # (B, H, capacity, D/H)
                layer.v = k.new_zeros(cache.batch_size, H, cache.capacity, Dh)
        position = torch.full((1,), cache.length, dtype=torch.long, device=tokens.device)  # (1,)
        inputs = (
            self, tokens, position, cache.layers, cache.rope_cos, cache.rope_sin,
            cache.context_bias, cache.empty_rows, cache.output_weight,
        )
        if greedy_banned is not None:
            out = (_compiled_static_greedy() if compiled else _static_greedy)(*inputs, greedy_banned)
        else:
            out = (_compiled_static_step() if compiled else _static_step)(*inputs)
        cache.length += 1
        return out

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        context: ExtendedContext,
        max_new_tokens: int,
        strategy: str = "greedy",
        num_beams: int = 4,
        length_penalty: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        compile_step: bool = False,
    ) -> Tensor:
        """Generate token ids for a batch of contexts (call ``eval()`` first: dropout stays on in
        training mode).

        Args:
            context: the contexts; samples may have different lengths (``context.mask``).
            max_new_tokens: most tokens to generate per sample.
            strategy: ``"greedy"``, ``"beam"`` or ``"sample"``.
            num_beams: beams per sample (``"beam"``).
            length_penalty: beam scores are ``sum log p / length ** length_penalty``.
            temperature: logits divisor before sampling (``"sample"``).
            top_k: sample among the ``top_k`` most likely tokens (0: all).
            top_p: sample within the nucleus of probability ``top_p`` (1.0: all).
            no_repeat_ngram_size: never repeat an n-gram of this size (0: off).
            repetition_penalty: CTRL penalty on tokens already generated (1.0: off).
            use_cache: decode through the KV cache (False recomputes the whole prefix at
                every step; same result, for testing and benchmarks).
            generator: random source for ``"sample"``, for reproducible samples.
            compile_step: decode through :meth:`static_step` compiled with ``torch.compile``
                (one graph with fixed shapes for every step; the first call per batch size,
                length and context length pays the compile time). Needs ``use_cache``. With
                ``"greedy"`` and neither repetition penalty nor n-gram ban, the token is
                picked inside the graph too (one graph call per token).

        Shapes:
            context.x: (B, M, D_ctx), context.mask: (B, M) bool
            returns: (B, T_out) long ids without BOS, ``T_out <= max_new_tokens``; after a
            sample's EOS come ``pad_id`` (``eos_id`` if no pad_id is set). Stops early
            when every sample has ended.
        """
        self._check_context(context, None)
        bos = self._require_bos("generate")
        if strategy not in _STRATEGIES:
            raise ValueError(f"TextDecoder.generate: strategy must be one of {_STRATEGIES}, got {strategy!r}")
        if not 1 <= max_new_tokens <= self.max_seq_len - 1:
            raise ValueError(
                f"TextDecoder.generate: max_new_tokens must be in [1, max_seq_len - 1 = {self.max_seq_len - 1}], "
                f"got {max_new_tokens}"
            )
        if num_beams < 1:
            raise ValueError(f"TextDecoder.generate: num_beams must be >= 1, got {num_beams}")
        if temperature <= 0:
            raise ValueError(f"TextDecoder.generate: temperature must be > 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"TextDecoder.generate: top_p must be in (0, 1], got {top_p}")
        if top_k < 0 or no_repeat_ngram_size < 0:
            raise ValueError(
                "TextDecoder.generate: top_k and no_repeat_ngram_size must be >= 0, "
                f"got {top_k}, {no_repeat_ngram_size}"
            )
        if repetition_penalty <= 0:
            raise ValueError(f"TextDecoder.generate: repetition_penalty must be > 0, got {repetition_penalty}")
        if compile_step and not use_cache:
            raise ValueError("TextDecoder.generate: compile_step=True needs use_cache=True (it runs the static KV cache)")

        beams = num_beams if strategy == "beam" else 1
        ctx_x, ctx_mask = context.x, context.mask
        if beams > 1:
            ctx_x = ctx_x.repeat_interleave(beams, 0)  # (B*K, M, D_ctx): beams of a sample are adjacent rows
            ctx_mask = ctx_mask.repeat_interleave(beams, 0)  # (B*K, M)
        fill = next(i for i in (self.pad_id, self.eos_id, bos) if i is not None)
        processing = LogitsProcessing(
            banned_ids=tuple(i for i in (bos, self.pad_id) if i is not None),
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        start = torch.full((ctx_x.shape[0], 1), bos, dtype=torch.long, device=ctx_x.device)  # (N, 1)

        cache = self._init_cache(ctx_x, ctx_mask, 1 + max_new_tokens) if use_cache else None

        plain_greedy = strategy == "greedy" and repetition_penalty == 1.0 and no_repeat_ngram_size == 0
        if compile_step and plain_greedy:
            # one compiled graph call per token: logits, ban and arg-max inside it
            return self._greedy_static(start, cache, max_new_tokens, processing.banned_ids, fill)

        def step(seqs: Tensor) -> Tensor:  # (N, t) → (N, V)
            if cache is not None:
                new = seqs[:, cache.length :]  # the tokens the cache has not seen (BOS at first)
                if compile_step:
                    return self.static_step(new, cache, compiled=True)[:, -1]
                return self.step(new, cache)[:, -1]
            hidden = self._run(seqs, torch.arange(seqs.shape[1], device=seqs.device), ctx_x, ctx_mask, None)
            return self._logits(hidden[:, -1])  # project only the position we need

        def reorder(rows: Tensor) -> None:
            if cache is not None:
                cache.reorder(rows)

        if strategy == "beam":
            tokens, _ = beam_search(
                step, reorder, start, beams, max_new_tokens, processing, self.eos_id, fill, length_penalty
            )
            return tokens
        return greedy_search(
            step,
            start,
            max_new_tokens,
            processing,
            self.eos_id,
            fill,
            do_sample=strategy == "sample",
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )

    # ------------------------------------------------------------------ internals

    def _greedy_static(
        self, start: Tensor, cache: DecoderCache, max_new_tokens: int, banned_ids: tuple[int, ...], fill: int
    ) -> Tensor:
        """Greedy search through the compiled static step, the arg-max inside the graph: the
        tokens of :func:`~mmctx.heads.generation.greedy_search` without repetition penalty
        or n-gram ban (EOS, then ``fill``, handled the same way).

        Shapes: start (N, 1) long → (N, T_out) long, ``T_out <= max_new_tokens``
        """
        N = start.shape[0]
        out = start.new_full((N, max_new_tokens), fill)  # (N, T_max)
        banned = torch.tensor(banned_ids, dtype=torch.long, device=start.device)  # (n,)
        finished = torch.zeros(N, 1, dtype=torch.bool, device=start.device)
        tokens, steps = start, 0
        for t in range(max_new_tokens):
            tokens = self.static_step(tokens, cache, compiled=True, greedy_banned=banned)  # (N, 1)
            if self.eos_id is not None:
                tokens = tokens.masked_fill(finished, fill)
                finished = finished | (tokens == self.eos_id)
            out[:, t : t + 1] = tokens
            steps = t + 1
            if self.eos_id is not None and bool(finished.all()):
                break
        return out[:, :steps]

    def _hidden(self, tokens: Tensor, context: ExtendedContext, token_mask: Tensor | None) -> Tensor:
        """Validate the inputs and run the blocks: (B, T) ids → (B, T, D) final hidden states."""
        check_shape("TextDecoder tokens", tokens, ("B", "T"))
        if tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(f"TextDecoder tokens: expected integer ids (torch.long), got {tokens.dtype}")
        B, T = tokens.shape
        if T > self.max_seq_len:
            raise ValueError(f"TextDecoder tokens: expected at most max_seq_len={self.max_seq_len} tokens, got {T}")
        self._check_context(context, B)
        if token_mask is not None:
            check_shape("TextDecoder token_mask", token_mask, (B, T))
            if token_mask.dtype != torch.bool:
                raise ValueError(f"TextDecoder token_mask: expected torch.bool, got {token_mask.dtype}")
            positions = (token_mask.long().cumsum(1) - 1).clamp_min(0)  # (B, T): index among real tokens
        else:
            positions = torch.arange(T, device=tokens.device)  # (T,)
        return self._run(tokens, positions, context.x, context.mask, token_mask)

    def _run(
        self, tokens: Tensor, positions: Tensor, ctx_x: Tensor, ctx_mask: Tensor, token_mask: Tensor | None
    ) -> Tensor:
        """Embed and run every block without a cache: (B, T) ids → (B, T, D)."""
        x = self.drop(self.embed(tokens))  # (B, T, D)
        scale = self._context_scale(ctx_mask)
        # an all-real context needs no mask; compiled, keep it (no data-dependent branch, no graph break)
        context_mask = ctx_mask if torch.compiler.is_compiling() or not bool(ctx_mask.all()) else None
        for block in self.blocks:
            x = block(x, positions, context=ctx_x, context_mask=context_mask, token_mask=token_mask, context_scale=scale)
        return x

    def _context_scale(self, ctx_mask: Tensor) -> Tensor | None:
        """Each row's cross-attention logit factor (None when ``length_scale_ref`` is off).
        Shapes: ctx_mask (B, M) → (B,)"""
        if self.length_scale_ref is None:
            return None
        return length_scale(ctx_mask.sum(1), self.length_scale_ref)

    def _logits(self, x: Tensor) -> Tensor:
        """Final norm and output projection: (..., D) → (..., V)."""
        x = self.norm(x)
        return F.linear(x, self.embed.weight) if self.lm_head is None else self.lm_head(x)

    def _init_cache(self, ctx_x: Tensor, ctx_mask: Tensor, capacity: int) -> DecoderCache:
        if capacity > self.max_seq_len:
            raise ValueError(f"TextDecoder: cache capacity {capacity} exceeds max_seq_len={self.max_seq_len}")
        block_weights, output_weight = self._step_weights()
        scale = self._context_scale(ctx_mask)  # (B,) or None
        # cross_kv 2×(B, H, M, D/H), contiguous: project_kv returns strided views of one (B, M, 2, H, D/H)
        # product, which the compiled step's fused attention loops read slower (one copy per call)
        layers = []
        for block, weights in zip(self.blocks, block_weights):
            k, v = block.cross_kv(ctx_x, scale)
            layers.append(_LayerCache((k.contiguous(), v.contiguous()), weights))
        cache = DecoderCache(layers, None, capacity, 0, batch_size=ctx_x.shape[0])
        # an all-real context needs no mask: SDPA then runs unmasked at every step
        if not bool(ctx_mask.all()):
            cache.context_mask = ctx_mask
            empty = ~ctx_mask.any(1)  # (B,) rows with no real context token
            attend = ctx_mask | empty[:, None]  # they attend everything; their output is zeroed
            bias = torch.zeros(ctx_mask.shape, dtype=ctx_x.dtype, device=ctx_x.device)
            cache.context_bias = bias.masked_fill(~attend, float("-inf"))[:, None, None, :]  # (B, 1, 1, M)
            cache.empty_rows = empty[:, None, None, None] if bool(empty.any()) else None  # (B, 1, 1, 1)
        cache.output_weight = output_weight
        rope = self.blocks[0].self_attn.rope if len(self.blocks) else None
        if rope is not None:
            # the angles RotaryEmbedding computes, for every position the cache can hold
            angles = torch.arange(capacity, device=ctx_x.device, dtype=torch.float32)[:, None] * rope.inv_freq
            cos, sin = angles.cos(), angles.sin()  # (capacity, D/H/2)
            cache.rope_cos = cos.repeat_interleave(2, -1)  # (capacity, D/H): (cos, cos) per channel pair
            cache.rope_sin = torch.stack((-sin, sin), -1).flatten(-2)  # (capacity, D/H): (-sin, +sin)
        return cache

    def _step_weights(self) -> tuple[list[dict[str, tuple[Tensor, Tensor | None]]], Tensor | None]:
        """The decode step's projections (see :func:`_decode_weights`) per block, and the tied
        output projection transposed (``None`` with an untied ``lm_head``).

        Building them copies every weight (a few ms for a 4-layer, 256-wide decoder on this
        CPU, where a 64-token ``generate`` call takes ~150 ms), so without autograd they are
        kept and reused by later calls for as long as every parameter is the same storage at
        the same version (an optimizer step, ``load_state_dict`` or any in-place change bumps
        the version, ``.to()`` moves the storage: both rebuild them). With autograd on they
        are rebuilt every call,
        so gradients reach the parameters. The price: one more copy of the blocks' projection
        weights stays in memory between calls (it is made during every call anyway).

        Shapes: per block ``{"qkv": ((D, 3D), (3D,)), "out": ((D, D), (D,)), ...}``; output (D, V)
        """
        keep = not torch.is_grad_enabled()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device, p.shape) for p in self.parameters())
        kept = self.__dict__.get("_kept_step_weights")
        if keep and kept is not None and kept[0] == key:
            return kept[1]
        # kept ones are ordinary tensors even when built under inference_mode, so a later call
        # outside it (or a compiled step) can use them
        with torch.inference_mode(False) if keep else contextlib.nullcontext():
            block_weights = []
            for block in self.blocks:
                attn, cross, ff = block.self_attn, block.cross_attn, block.ff.net
                block_weights.append({
                    "qkv": _decode_weights(attn.q_proj, attn.kv_proj),  # (D, 3D): q, k, v in one product
                    "out": _decode_weights(attn.out_proj),
                    "cross_q": _decode_weights(cross.q_proj),
                    "cross_out": _decode_weights(cross.out_proj),
                    "ff_in": _decode_weights(ff[0]),
                    "ff_out": _decode_weights(ff[3]),
                })
            output_weight = self.embed.weight.t().contiguous() if self.lm_head is None else None  # (D, V)
        if keep:
            self.__dict__["_kept_step_weights"] = (key, (block_weights, output_weight))  # not a buffer: no state
        return block_weights, output_weight

    def _check_context(self, context: ExtendedContext, batch_size: int | None) -> None:
        if not isinstance(context, ExtendedContext):
            raise TypeError(f"TextDecoder: context must be an ExtendedContext, got {type(context).__name__}")
        check_shape("TextDecoder context.x", context.x, (batch_size or "B", "M", self.context_dim))

    def _require_bos(self, what: str) -> int:
        if self.bos_id is None:
            raise ValueError(
                f"TextDecoder.{what}: bos_id is not set (it comes from the tokenizer; the CLI fills it in)"
            )
        return self.bos_id


def length_scale(num_tokens: Tensor, ref: int) -> Tensor:
    """The cross-attention logit factor of length-scaled attention: ``max(1, log(M) / log(ref))``
    for ``M`` real context tokens (1 up to ``ref`` tokens, growing as ``log M`` beyond).

    Shapes: num_tokens (B,) int → (B,) float
    """
    return (num_tokens.clamp_min(1).float().log() / math.log(ref)).clamp_min(1.0)


def _static_step(
    decoder: TextDecoder,
    tokens: Tensor,
    position: Tensor,
    layers: list[_LayerCache],
    rope_cos: Tensor | None,
    rope_sin: Tensor | None,
    context_bias: Tensor | None,
    empty_rows: Tensor | None,
    output_weight: Tensor | None,
) -> Tensor:
    """The body of :meth:`TextDecoder.static_step`: fixed shapes, no Python branch on values.

    Shapes: tokens (B, 1), position (1,) → logits (B, 1, V)
    """
    x = decoder.embed(tokens)  # (B, 1, D); eval mode: no dropout
    capacity = layers[0].k.shape[2] if layers else 1
    unfilled = torch.arange(capacity, device=tokens.device) > position  # (capacity,)
    key_bias = torch.zeros(capacity, device=tokens.device).masked_fill(unfilled, float("-inf"))  # 0 at filled positions
    key_bias = key_bias.to(x.dtype).view(1, 1, 1, capacity)
    cos = sin = None
    if rope_cos is not None and rope_sin is not None:
        cos, sin = rope_cos.index_select(0, position), rope_sin.index_select(0, position)  # (1, D/H)
    for block, layer in zip(decoder.blocks, layers):
        x = block.decode_static(x, layer, position, key_bias, cos, sin, context_bias, empty_rows)
    if output_weight is None:
        return decoder._logits(x)
    return _linear(decoder.norm(x), output_weight, None)  # (B, 1, V)


def _static_greedy(
    decoder: TextDecoder,
    tokens: Tensor,
    position: Tensor,
    layers: list[_LayerCache],
    rope_cos: Tensor | None,
    rope_sin: Tensor | None,
    context_bias: Tensor | None,
    empty_rows: Tensor | None,
    output_weight: Tensor | None,
    banned: Tensor,
) -> Tensor:
    """:func:`_static_step`, then greedy search's choice: the ``banned`` ids (may be empty)
    set to ``-inf`` and the arg-max, as :func:`~mmctx.heads.generation.greedy_search` does.

    Shapes: tokens (B, 1), position (1,), banned (n,) long → next tokens (B, 1) long
    """
    logits = _static_step(
        decoder, tokens, position, layers, rope_cos, rope_sin, context_bias, empty_rows, output_weight
    )[:, -1].float()  # (B, V)
    return logits.index_fill(1, banned, float("-inf")).argmax(-1, keepdim=True)  # (B, 1)


_COMPILED_STATIC_STEP = None
_COMPILED_STATIC_GREEDY = None


def _compiled_static_step():
    """:func:`_static_step` under ``torch.compile`` (built on first use; one graph per batch
    size, capacity and context length: static shapes, ``fullgraph`` so a break is an error)."""
    global _COMPILED_STATIC_STEP
    if _COMPILED_STATIC_STEP is None:
        _COMPILED_STATIC_STEP = torch.compile(_static_step, fullgraph=True, dynamic=False)
    return _COMPILED_STATIC_STEP


def _compiled_static_greedy():
    """:func:`_static_greedy` under ``torch.compile`` (as :func:`_compiled_static_step`)."""
    global _COMPILED_STATIC_GREEDY
    if _COMPILED_STATIC_GREEDY is None:
        _COMPILED_STATIC_GREEDY = torch.compile(_static_greedy, fullgraph=True, dynamic=False)
    return _COMPILED_STATIC_GREEDY
