"""Encode sequences of any length with a fixed-window encoder: overlapping windows, smoothed merge."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmctx.types import Tokens, check_shape

__all__ = ["OverlappingWindowEncoder"]

SMOOTHING: tuple[str, ...] = ("linear", "mean", "none")


class OverlappingWindowEncoder(nn.Module):
    """Wrap a sequence encoder so that it encodes inputs of any length as overlapping windows.

    The input (B, T) is cut into windows ``[k·stride, k·stride + window)`` (window and stride in
    input units: text tokens, audio samples); every window is encoded by ``encoder`` (all
    windows of the batch in one call, or ``window_batch_size`` at a time); the window outputs
    are placed back at their positions and, where windows overlap, merged with weights that
    sum to 1 at every position:

    * ``"linear"`` (boundary smoothing): each window's weight ramps linearly over its overlap
      with the previous window (up) and with the next one (down), so two overlapping windows
      cross-fade and the merged sequence has no jump at a window boundary;
    * ``"mean"``: plain average of the windows covering a position;
    * ``"none"``: no blending; each position takes the window in which it lies farthest from
      an overlap edge (a hard cut in the middle of each overlap).

    A window is encoded for a sample only if it holds real input the previous window did not
    reach, so a sample's windows depend on its own length only: padding and the other samples
    of the batch never change its outputs. When the whole input fits in one window
    (``T <= window``) the result is exactly ``encoder(data, mask)``.

    **Dynamic windows** (``max_window_tokens`` set): the window is chosen per sample from its
    real length L and the budget W = ``max_window_tokens`` (input units), keeping the overlap
    O = ``window - stride``. If L <= W the sample is encoded in one window (exact plain
    encoding). Otherwise it uses the fewest windows n that each fit the budget,
    n = ceil((L - O) / (W - O)), made as even as possible: stride s = ceil((L - O) / n)
    (rounded up to a multiple of :attr:`units_per_token`, adding a window if that overflows
    W) and window s + O. Short inputs thus get full context, and long ones no tiny last
    window. The batch is encoded once per distinct (window, stride) it contains.

    Supported encoders (contract ``forward(data (B, T), mask (B, T)) -> Tokens``, ``out_dim``):

    * one token per input position (``TextTransformerEncoder``, ``HFTextEncoder``): exact
      position mapping, any mask (holes too);
    * encoders with an ``output_lengths(lengths)`` method and a constant token step r input
      units (``RNNAudioEncoder``: r = 4·hop_length samples): window k's token j is the whole
      input's token k·stride/r + j, exact when ``stride`` is a multiple of r (checked when the
      wrapper is built) and the input masks are prefixes. The window must cover the token
      receptive field: ``output_lengths(window) >= stride / r``, also checked. A sample's
      last window that is too short to give a token is skipped (the previous one already
      covers its last tokens). The output has ``max(output_lengths(T), 1)`` tokens, as the
      audio encoder's own.

    Token *values* near a window edge see less context than in one long pass (and an encoder
    that normalises per utterance, like the audio one, normalises per window); smoothing
    weighs those edge tokens down.

    Args:
        encoder: the wrapped sequence encoder (a built module).
        window: window length in input units; at most ``encoder.max_seq_len`` if it has one.
        stride: step between window starts, ``1 <= stride <= window``; overlap = window - stride.
        smoothing: ``"linear"``, ``"mean"`` or ``"none"`` (see above).
        max_window_tokens: token budget W for dynamic windows (input units); None keeps the
            fixed ``window``.
        window_batch_size: encode at most this many windows per encoder call (None: all).
        checkpoint_blocks: activation checkpointing per encoder call in training (one call
            per ``window_batch_size`` windows; ``torch.utils.checkpoint``, non-reentrant):
            only the window outputs are kept and each call is recomputed in the backward
            pass, so the activations of one window batch are alive at a time. Needs a
            ``window_batch_size`` to save memory (one call over all windows recomputes
            them all at once). Same outputs and gradients.

    Attributes:
        out_dim: the wrapped encoder's token width.
        units_per_token: input units per output token r (1 for one token per position).
    """

    def __init__(
        self,
        encoder: nn.Module,
        window: int,
        stride: int,
        smoothing: str = "linear",
        max_window_tokens: int | None = None,
        window_batch_size: int | None = None,
        checkpoint_blocks: bool = False,
    ) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"OverlappingWindowEncoder: window must be >= 1, got {window}")
        if not 1 <= stride <= window:
            raise ValueError(f"OverlappingWindowEncoder: stride must be in [1, window={window}], got {stride}")
        if smoothing not in SMOOTHING:
            raise ValueError(f"OverlappingWindowEncoder: smoothing must be one of {list(SMOOTHING)}, got {smoothing!r}")
        if max_window_tokens is not None and max_window_tokens < window:
            raise ValueError(
                f"OverlappingWindowEncoder: max_window_tokens={max_window_tokens} must be >= window={window}"
            )
        if window_batch_size is not None and window_batch_size < 1:
            raise ValueError(f"OverlappingWindowEncoder: window_batch_size must be >= 1, got {window_batch_size}")
        if not hasattr(encoder, "out_dim"):
            raise ValueError(f"OverlappingWindowEncoder: encoder {type(encoder).__name__} has no out_dim (encoder contract)")
        max_len = getattr(encoder, "max_seq_len", None)
        longest = max_window_tokens if max_window_tokens is not None else window
        if max_len is not None and longest > max_len:
            raise ValueError(
                f"OverlappingWindowEncoder: windows of up to {longest} exceed the encoder's max_seq_len={max_len}"
            )
        self.encoder = encoder
        self.window = window
        self.stride = stride
        self.smoothing = smoothing
        self.max_window_tokens = max_window_tokens
        self.window_batch_size = window_batch_size
        self.checkpoint_blocks = checkpoint_blocks
        self.out_dim: int = encoder.out_dim
        self.units_per_token = self._find_token_step()

    # ------------------------------------------------------------------ rate bookkeeping
    def _num_tokens(self, lengths: Tensor) -> Tensor:
        """Output tokens for real input lengths (identity without ``output_lengths``)."""
        fn = getattr(self.encoder, "output_lengths", None)
        return lengths.long() if fn is None else fn(lengths).long()

    def _find_token_step(self) -> int:
        """Input units per token, checked constant; validates stride and window against it."""
        if getattr(self.encoder, "output_lengths", None) is None:
            return 1
        lengths = torch.arange(0, self.window + 1)
        counts = self._num_tokens(lengths)  # (window+1,)
        steps = lengths[1:][counts[1:] > counts[:-1]]  # lengths where one more token appears
        if (counts[1:] - counts[:-1]).max() > 1 or steps.numel() < 2:
            raise ValueError(
                f"OverlappingWindowEncoder: window={self.window} is too short to measure the encoder's token step "
                f"(it gives {int(counts[-1])} tokens); use a longer window"
            )
        gaps = steps[1:] - steps[:-1]
        r = int(gaps[0])
        if not bool((gaps == r).all()):
            raise ValueError("OverlappingWindowEncoder: the encoder's output_lengths does not grow by one token every r units")
        if self.stride % r != 0:
            raise ValueError(
                f"OverlappingWindowEncoder: stride={self.stride} must be a multiple of the encoder's token step {r} "
                "input units, so that window tokens align with the tokens of the whole input"
            )
        if int(counts[-1]) < self.stride // r:
            raise ValueError(
                f"OverlappingWindowEncoder: a window of {self.window} gives {int(counts[-1])} tokens but a stride advances "
                f"{self.stride // r}; increase the overlap (window - stride) to cover the receptive field"
            )
        return r

    def window_for_length(self, length: int) -> tuple[int, int]:
        """The (window, stride) used for a sample of ``length`` real input units (dynamic rule)."""
        if self.max_window_tokens is None:
            return self.window, self.stride
        budget, overlap, r = self.max_window_tokens, self.window - self.stride, self.units_per_token
        if length <= budget:
            return budget, budget - overlap
        n = math.ceil((length - overlap) / (budget - overlap))
        while True:
            stride = math.ceil(math.ceil((length - overlap) / n) / r) * r
            if stride + overlap <= budget:
                return stride + overlap, stride
            n += 1

    # ------------------------------------------------------------------ forward
    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode ``data`` window by window and merge the overlaps.

        Shapes:
            data: (B, T) — token ids or waveform samples; values at padding are never read
            mask: (B, T) bool, True at real positions
            returns: Tokens with x (B, N, D) and mask (B, N); N = T for one-token-per-position
                encoders (mask equal to ``mask``), else ``max(output_lengths(T), 1)``;
                padding rows are zeros
        """
        check_shape("OverlappingWindowEncoder data", data, ("B", "T"))
        check_shape("OverlappingWindowEncoder mask", mask, tuple(data.shape))
        if mask.dtype != torch.bool:
            raise ValueError(f"OverlappingWindowEncoder mask: expected torch.bool, got {mask.dtype}")
        ends = self._ends(mask)  # (B,)
        if self.max_window_tokens is None:
            return self._encode(data, mask, ends, self.window, self.stride)
        configs = [self.window_for_length(int(e)) for e in ends.tolist()]
        groups: dict[tuple[int, int], list[int]] = {}
        for b, cfg in enumerate(configs):
            groups.setdefault(cfg, []).append(b)
        if len(groups) == 1:
            ((w, s),) = groups
            return self._encode(data, mask, ends, w, s)
        xs, ms, idx = [], [], []
        for (w, s), rows in groups.items():
            sel = torch.tensor(rows, device=data.device)
            tok = self._encode(data.index_select(0, sel), mask.index_select(0, sel), ends.index_select(0, sel), w, s)
            xs.append(tok.x)
            ms.append(tok.mask)
            idx.append(sel)
        order = torch.argsort(torch.cat(idx))  # back to batch order
        return Tokens(torch.cat(xs).index_select(0, order), torch.cat(ms).index_select(0, order))

    def _ends(self, mask: Tensor) -> Tensor:
        """(B,) one past each sample's last real position (its length for prefix masks)."""
        B, T = mask.shape
        idx = torch.arange(1, T + 1, device=mask.device)
        ends = (mask.long() * idx).amax(dim=1) if T > 0 else mask.new_zeros(B, dtype=torch.long)  # (B,)
        if self.units_per_token > 1 and not bool((mask.sum(dim=1) == ends).all()):
            b = int((mask.sum(dim=1) != ends).nonzero()[0])
            raise ValueError(
                f"OverlappingWindowEncoder mask: row {b} is not a prefix (real values first, then padding), which an "
                f"encoder with output_lengths needs (mask shape {tuple(mask.shape)})"
            )
        return ends

    def _encode(self, data: Tensor, mask: Tensor, ends: Tensor, window: int, stride: int) -> Tokens:
        """Windows of one (window, stride) over a batch; see :meth:`forward` for shapes."""
        B, T = data.shape
        r = self.units_per_token
        max_end = int(ends.max()) if B > 0 else 0
        K = 1 + max(0, math.ceil((max_end - window) / stride))  # windows needed by the longest sample
        if K == 1 and T <= window:
            return self.encoder(data, mask)  # the whole input fits: plain encoding, exactly
        device = data.device
        N = T if r == 1 else max(int(self._num_tokens(torch.tensor(T))), 1)
        starts = torch.arange(K, device=device) * stride  # (K,)
        seg_len = (ends[None, :] - starts[:, None]).clamp(0, window)  # (K, B) real units per window
        prev_reaches_end = (starts[:, None] - stride + window) >= ends[None, :]  # (K, B)
        first = torch.arange(K, device=device)[:, None] == 0
        n_tok = self._num_tokens(seg_len) if r > 1 else seg_len  # (K, B) tokens a window gives
        used = (seg_len > 0) & (first | ~prev_reaches_end) & (n_tok > 0)  # (K, B)
        n_tok = n_tok * used
        offsets = starts // r  # (K,) global index of a window's first token

        # overlap (in tokens) of each window with its used neighbours, for the ramps
        span_end = offsets[:, None] + n_tok  # (K, B)
        ov_left = torch.zeros_like(n_tok)
        ov_right = torch.zeros_like(n_tok)
        if K > 1:
            left = (span_end[:-1] - offsets[1:, None]).clamp_min(0)  # (K-1, B) overlap of k-1 and k
            both = used[:-1] & used[1:]
            ov_left[1:] = left * both
            ov_right[:-1] = left * both

        k_idx, b_idx = used.nonzero(as_tuple=True)  # (P,), (P,)
        pos = starts[k_idx][:, None] + torch.arange(window, device=device)[None, :]  # (P, window)
        inside = pos < T
        pos = pos.clamp_max(max(T - 1, 0))
        seg_data = data[b_idx[:, None], pos]  # (P, window)
        seg_mask = mask[b_idx[:, None], pos] & inside  # (P, window)
        tok_x, tok_mask = self._encode_rows(seg_data, seg_mask)  # (P, n, D), (P, n)
        n = tok_x.shape[1]
        expected_n = window if r == 1 else max(int(self._num_tokens(torch.tensor(window))), 1)
        if n != expected_n:
            raise ValueError(
                f"OverlappingWindowEncoder: the encoder gave {n} tokens for a window of {window} input units, expected "
                f"{expected_n} (one per position, or output_lengths(window))"
            )

        weights = self._weights(n, n_tok[k_idx, b_idx], ov_left[k_idx, b_idx], ov_right[k_idx, b_idx])  # (P, n)
        weights = weights * tok_mask.to(weights.dtype)
        g = offsets[k_idx][:, None] + torch.arange(n, device=device)[None, :]  # (P, n) global token index
        keep = (weights > 0) & (g < N)
        flat = (b_idx[:, None] * N + g)[keep]  # (Q,)
        w_keep = weights[keep]  # (Q,)
        D = tok_x.shape[-1]
        num = tok_x.new_zeros(B * N, D).index_add(0, flat, tok_x[keep] * w_keep[:, None].to(tok_x.dtype))
        den = weights.new_zeros(B * N).index_add(0, flat, w_keep)  # (B·N,)
        out_mask = (den > 0).view(B, N)  # (B, N)
        x = (num / den.clamp_min(1e-12)[:, None].to(num.dtype)).view(B, N, D)  # (B, N, D)
        expected = mask if r == 1 else torch.arange(N, device=device)[None, :] < self._num_tokens(ends)[:, None]
        if not torch.equal(out_mask, expected):
            raise ValueError(
                "OverlappingWindowEncoder: the merged windows do not cover exactly the real positions; the encoder must give "
                "one token per real input position (or follow its output_lengths)"
            )
        return Tokens(x.masked_fill(~out_mask[..., None], 0.0), out_mask)

    def _encode_rows(self, seg_data: Tensor, seg_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Run the encoder over window rows, ``window_batch_size`` at a time.

        Shapes: seg_data, seg_mask (P, window) → x (P, n, D), mask (P, n)
        """
        size = self.window_batch_size or max(seg_data.shape[0], 1)
        xs, ms = [], []
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for i in range(0, seg_data.shape[0], size):
            if recompute:
                x, m = checkpoint(self._encode_tensors, seg_data[i : i + size], seg_mask[i : i + size], use_reentrant=False)
            else:
                x, m = self._encode_tensors(seg_data[i : i + size], seg_mask[i : i + size])
            xs.append(x)
            ms.append(m)
        return torch.cat(xs), torch.cat(ms)

    def _encode_tensors(self, data: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's Tokens as a tuple (what ``checkpoint`` handles). Shapes: see :meth:`_encode_rows`."""
        tok = self.encoder(data, mask)
        return tok.x, tok.mask

    def _weights(self, n: int, count: Tensor, ov_left: Tensor, ov_right: Tensor) -> Tensor:
        """Merge weights of each window row's tokens (before normalisation).

        Shapes: count, ov_left, ov_right (P,) → (P, n) float, 0 beyond ``count``
        """
        j = torch.arange(n, device=count.device, dtype=torch.float32)[None, :]  # (1, n)
        count_f, left, right = count.float()[:, None], ov_left.float()[:, None], ov_right.float()[:, None]
        inside = j < count_f
        if self.smoothing == "linear":
            # cross-fades: window k goes down (o-i)/(o+1) while k+1 goes up (i+1)/(o+1), summing to 1
            w = torch.minimum((j + 1) / (left + 1), (count_f - j) / (right + 1)).clamp_max(1.0)
        elif self.smoothing == "mean":
            w = torch.ones_like(j).expand(count.shape[0], n)
        else:  # "none": hard cut in the middle of each overlap
            w = ((j >= torch.div(left, 2, rounding_mode="floor")) & (j < count_f - torch.ceil(right / 2))).float()
        return w * inside

    def extra_repr(self) -> str:
        return (
            f"window={self.window}, stride={self.stride}, smoothing={self.smoothing!r}, "
            f"max_window_tokens={self.max_window_tokens}, units_per_token={self.units_per_token}"
            + (", checkpoint_blocks=True" if self.checkpoint_blocks else "")
        )
