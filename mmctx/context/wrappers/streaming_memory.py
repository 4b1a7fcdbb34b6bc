"""A sequence encoder run segment by segment with recurrent memory: long streams in constant memory."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from mmctx.context.fused.memory import RecurrentMemoryEncoder
from mmctx.losses.detection import token_detection_loss
from mmctx.types import Tokens, check_shape

__all__ = ["StreamingMemoryEncoder"]

READOUTS: tuple[str, ...] = ("memory", "max")


class StreamingMemoryEncoder(nn.Module):
    """Encode a long input (a waveform, a token stream) segment by segment and carry a memory.

    The input (B, T) is cut into segments of ``segment_len`` input units (audio samples,
    text tokens); segment k is encoded by ``encoder`` together with the ``context_len`` units
    before it, ``[k·segment_len - context_len, (k+1)·segment_len)`` (so a word cut by a segment
    boundary is heard whole), giving at most n tokens; those tokens, padded to n, are one
    segment of ``memory`` (a :class:`~mmctx.context.RecurrentMemoryEncoder` whose
    ``segment_len`` must be n, checked when built), which updates its memory tokens from
    them. The output is the **final memory**: M tokens per sample, whatever the input length.

    The readout (``readout``) says what the output holds besides the memory:

    * ``"memory"``: the final memory alone, (B, M, D). A fact heard early must survive every
      later memory update to be read.
    * ``"max"``: a running per-channel max over every segment's output tokens (the memory
      encoder's contextualised tokens, padding excluded), then the final memory:
      (B, 1 + M, D). A token that stands out in a channel keeps its value whatever follows,
      and whatever the stream's length (the argument for a max-pooling head, carried over to
      streams), and streaming carries one (B, D) vector more: still constant memory.

    Two ways to run the same computation:

    * :meth:`forward` (training, batch evaluation): every segment of the batch goes through
      ``encoder`` in one call, then ``memory`` runs over the concatenated segments (its
      ``bptt_segments`` truncates the gradient);
    * :meth:`stream` (inference on inputs of any length): pieces of the input are read one at
      a time (from an iterator, e.g. a file or a generator) and the memory is carried, so
      peak memory is that of one segment, constant in the input length. Given the same
      input, its memory equals :meth:`forward`'s (up to floating-point reassociation).

    A segment with no real input, or too little for one token (an audio tail shorter than
    the encoder's ``min_samples``), leaves the memory unchanged.

    Args:
        encoder: the segment encoder (encoder contract ``forward(data, mask) -> Tokens``,
            ``out_dim``; with ``output_lengths`` for a downsampling encoder like
            ``RNNAudioEncoder``, else one token per input unit).
        memory: the recurrent memory over the segments' tokens; its ``dim`` must be
            ``encoder.out_dim`` and its ``segment_len`` the tokens of one segment with its
            context (the error message says the value).
        segment_len: input units per segment (its stride).
        context_len: input units before a segment that its encoder call also reads (0: none).
        readout: ``"memory"`` or ``"max"`` (see above).

    Attributes:
        out_dim: the token width D.
        tokens_per_segment: n, the most tokens one segment (with its context) gives.
        last_tokens, last_memory: the last :meth:`forward`'s per-segment output tokens and final
            memory (None before the first call), read by :meth:`frame_loss`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        memory: RecurrentMemoryEncoder,
        segment_len: int,
        context_len: int = 0,
        readout: str = "memory",
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"StreamingMemoryEncoder: readout must be one of {list(READOUTS)}, got {readout!r}")
        if segment_len < 1:
            raise ValueError(f"StreamingMemoryEncoder: segment_len must be >= 1, got {segment_len}")
        if context_len < 0:
            raise ValueError(f"StreamingMemoryEncoder: context_len must be >= 0, got {context_len}")
        if not hasattr(encoder, "out_dim"):
            raise ValueError(f"StreamingMemoryEncoder: encoder {type(encoder).__name__} has no out_dim (encoder contract)")
        if not isinstance(memory, RecurrentMemoryEncoder):
            raise TypeError(f"StreamingMemoryEncoder: memory must be a RecurrentMemoryEncoder, got {type(memory).__name__}")
        if memory.dim != encoder.out_dim:
            raise ValueError(f"StreamingMemoryEncoder: memory.dim={memory.dim} but encoder.out_dim={encoder.out_dim}")
        max_len = getattr(encoder, "max_seq_len", None)
        if max_len is not None and segment_len + context_len > max_len:
            raise ValueError(
                f"StreamingMemoryEncoder: segment_len + context_len = {segment_len + context_len} exceeds the "
                f"encoder's max_seq_len={max_len}"
            )
        self.encoder = encoder
        self.memory = memory
        self.segment_len = segment_len
        self.context_len = context_len
        self.readout = readout
        self.out_dim: int = encoder.out_dim
        #: the last :meth:`forward`'s per-segment output tokens (B, K·n, D) and final memory
        #: (B, M, D), read by :meth:`frame_loss`
        self.last_tokens: Tokens | None = None
        self.last_memory: Tensor | None = None
        self.tokens_per_segment = int(self._num_tokens(torch.tensor(segment_len + context_len)))
        if self.tokens_per_segment < 1:
            raise ValueError(
                f"StreamingMemoryEncoder: a segment of {segment_len + context_len} units gives no token; use longer segments"
            )
        if memory.segment_len != self.tokens_per_segment:
            raise ValueError(
                f"StreamingMemoryEncoder: memory.segment_len={memory.segment_len} but one segment "
                f"({segment_len} + {context_len} context units) gives {self.tokens_per_segment} tokens; "
                f"set the memory's segment_len to {self.tokens_per_segment}"
            )

    def _num_tokens(self, lengths: Tensor) -> Tensor:
        fn = getattr(self.encoder, "output_lengths", None)
        return lengths.long() if fn is None else fn(lengths).long()

    # ------------------------------------------------------------------ one pass
    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode every segment, then run the memory over them; returns the final memory.

        Shapes:
            data: (B, T) as the wrapped encoder takes it; values at padding are never read
            mask: (B, T) bool, True at real input, a prefix of each row
            returns: Tokens with x (B, M, D), the final memory (readout ``"max"``: (B, 1 + M, D),
                the running max first), and mask of the same (B, ·), True for samples with
                input (an all-False row is a missing sample: zeros)
        """
        check_shape("StreamingMemoryEncoder data", data, ("B", "T"))
        check_shape("StreamingMemoryEncoder mask", mask, tuple(data.shape))
        if mask.dtype != torch.bool:
            raise ValueError(f"StreamingMemoryEncoder mask: expected torch.bool, got {mask.dtype}")
        B, T = data.shape
        S, C, n = self.segment_len, self.context_len, self.tokens_per_segment
        K = max(-(-T // S), 1)  # segments
        lengths = mask.sum(dim=1)  # (B,) real units (prefix masks)
        # segment k reads [k·S - C, (k+1)·S): left-pad by C so that every window has S + C units
        padded = torch.nn.functional.pad(data, (C, K * S - T))  # (B, C + K·S)
        padded_mask = torch.nn.functional.pad(mask, (C, K * S - T), value=False)  # (B, C + K·S)
        windows = padded.unfold(1, S + C, S)  # (B, K, S+C)
        window_mask = padded_mask.unfold(1, S + C, S)  # (B, K, S+C)
        own = window_mask[:, :, C:].any(dim=2).reshape(B * K)  # (B·K,) a segment of a shorter sample's padding
        x, tok_mask = self._encode_windows(windows.reshape(B * K, S + C), window_mask.reshape(B * K, S + C), own)
        seq = Tokens(x.view(B, K * n, -1), tok_mask.view(B, K * n))  # (B, K·n, D)
        out, memory = self.memory.encode(seq)  # (B, K·n, D), (B, M, D)
        self.last_tokens, self.last_memory = out, memory  # for frame_loss
        running = self._segment_max(out.x, out.mask) if self.readout == "max" else None  # (B, D)
        return self._output(memory, lengths > 0, running)

    # ------------------------------------------------------------------ frame-level loss
    def token_centers(self, num_segments: int) -> Tensor:
        """The input unit at the centre of each token slot of :meth:`forward`'s per-segment
        tokens (segment k's window starts at ``max(k·segment_len - context_len, 0)``; token t
        of a window covers ``[t·stride, t·stride + width)`` of it, with the encoder's
        ``token_stride`` / ``token_width``, else one token per unit).

        Shapes: returns (num_segments · tokens_per_segment,) long
        """
        stride = int(getattr(self.encoder, "token_stride", 1))
        width = int(getattr(self.encoder, "token_width", 1))
        starts = (torch.arange(num_segments) * self.segment_len - self.context_len).clamp_min(0)  # (K,)
        t = torch.arange(self.tokens_per_segment) * stride + width // 2  # (n,)
        return (starts[:, None] + t[None, :]).reshape(-1)

    def frame_loss(self, spans: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        """Frame-level detection loss on the tokens of the last :meth:`forward` call.

        Channels ``0 .. num_classes`` of each real per-segment output token are read as
        logits of (background, class 0, ..., class num_classes-1): a token whose centre
        (:meth:`token_centers`) lies in ``spans[b]`` is of class ``labels[b]``, every other
        token, and every final memory token, is background. The loss is the mean
        cross-entropy over the class tokens plus the mean over the background ones (so the
        few tokens of a short event weigh as much as the rest). With the ``"max"`` readout the
        running max of channel ``1 + c`` is then the stream's highest score for class c.

        Shapes: spans (B, 2) long [start, stop) in input units; labels (B,) long → scalar

        Raises:
            RuntimeError: when :meth:`forward` has not run; ValueError: for a batch size other
                than the last forward's, or ``num_classes + 1`` > the width D.
        """
        out = self.last_tokens
        if out is None or self.last_memory is None:
            raise RuntimeError("StreamingMemoryEncoder.frame_loss: call forward first")
        B, L, D = out.x.shape
        check_shape("StreamingMemoryEncoder.frame_loss spans", spans, (B, 2))
        check_shape("StreamingMemoryEncoder.frame_loss labels", labels, (B,))
        if num_classes + 1 > D:
            raise ValueError(f"StreamingMemoryEncoder.frame_loss: num_classes + 1 = {num_classes + 1} > width {D}")
        centers = self.token_centers(L // self.tokens_per_segment).to(spans.device)  # (L,)
        inside = (centers[None] >= spans[:, :1]) & (centers[None] < spans[:, 1:])  # (B, L)
        memory = self.last_memory[..., : num_classes + 1].reshape(-1, num_classes + 1)  # final memory: background
        return token_detection_loss(out.x[..., : num_classes + 1], out.mask, inside, labels, background=memory)

    def _encode_windows(self, windows: Tensor, window_mask: Tensor, own: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode segment windows, each one's tokens left-aligned and padded to n.

        A window's first C units may be padding (the first segment has no context): the
        real units are shifted to the front, so that the encoder sees a prefix mask. A
        window whose segment holds no real unit of its own (``own`` False: only context,
        past a shorter sample's end) gives no tokens.

        Shapes: windows, window_mask (P, W), W <= S+C; own (P,) bool → x (P, n, D), mask (P, n)
        """
        P, W = windows.shape
        n, D = self.tokens_per_segment, self.out_dim
        lead = (~window_mask).long().cumprod(dim=1).sum(dim=1)  # (P,) padding before the first real unit
        idx = (torch.arange(W, device=windows.device)[None, :] + lead[:, None]).clamp_max(W - 1)  # (P, W)
        real = window_mask.sum(dim=1)  # (P,)
        shifted_mask = torch.arange(W, device=windows.device)[None, :] < real[:, None]  # (P, W) prefix
        shifted = windows.gather(1, idx).masked_fill(~shifted_mask, 0)  # (P, W)
        usable = self._num_tokens(real) > 0  # (P,) too short for one token: no input
        if own is not None:
            usable = usable & own
        rows = usable.nonzero().squeeze(1)
        x = windows.new_zeros(P, n, D, dtype=self._dtype())
        tok_mask = torch.zeros(P, n, dtype=torch.bool, device=windows.device)
        if rows.numel():
            # trim to the longest real window so a tail segment costs what it holds
            width = int(real[rows].max())
            tok = self.encoder(shifted[rows, :width], shifted_mask[rows, :width])
            m = tok.x.shape[1]
            x = x.to(tok.x.dtype)
            x[rows, :m] = tok.x[:, :n]
            tok_mask[rows, :m] = tok.mask[:, :n]
        return x, tok_mask

    def _dtype(self) -> torch.dtype:
        return next(self.memory.parameters()).dtype

    @staticmethod
    def _segment_max(x: Tensor, mask: Tensor, running: Tensor | None = None) -> Tensor:
        """Per-channel max over the real tokens, folded into ``running``; rows without a real
        token stay at the dtype's lowest value (``_output`` masks them).

        Shapes: x (B, L, D), mask (B, L), running (B, D) → (B, D)
        """
        low = torch.finfo(x.dtype).min
        seg = x.masked_fill(~mask[..., None], low).amax(dim=1) if x.shape[1] else x.new_full(x.shape[::2], low)  # (B, D)
        return seg if running is None else torch.maximum(running, seg)

    def _output(self, memory: Tensor, present: Tensor, running: Tensor | None = None) -> Tokens:
        """Shapes: memory (B, M, D), present (B,), running (B, D) or None → Tokens (B, M, D),
        (B, M); with ``running``, (B, 1 + M, D), (B, 1 + M)."""
        out_mask = present[:, None].expand(-1, memory.shape[1])  # (B, M)
        x = memory.masked_fill(~out_mask[..., None], 0.0)
        if running is None:
            return Tokens(x, out_mask.clone())
        has_max = present & (running > torch.finfo(running.dtype).min).all(dim=1)  # (B,) some token was read
        top = running.masked_fill(~has_max[:, None], 0.0)[:, None].to(x.dtype)  # (B, 1, D)
        return Tokens(torch.cat([top, x], dim=1), torch.cat([has_max[:, None], out_mask], dim=1))  # (B, 1+M, D)

    # ------------------------------------------------------------------ streaming
    def initial_memory(self, batch_size: int) -> Tensor:
        """The learned initial memory. Shapes: returns (B, M, D)."""
        return self.memory.initial_memory(batch_size)

    def step(self, window: Tensor, window_mask: Tensor, memory: Tensor) -> Tensor:
        """Update the memory with one segment (its context units first, then its own).

        Shapes:
            window: (B, W), W <= segment_len + context_len: the segment's context and the
                segment; window_mask: (B, W) bool, True at real units
            memory: (B, M, D)
            returns: the new memory (B, M, D)
        """
        return self._step(window, window_mask, memory)[0]

    def _step(self, window: Tensor, window_mask: Tensor, memory: Tensor) -> tuple[Tensor, Tokens]:
        """:meth:`step`, also returning the segment's output tokens. Shapes: → (B, M, D), (B, n, D)."""
        x, tok_mask = self._encode_windows(window, window_mask)  # (B, n, D), (B, n)
        out, memory = self.memory.encode(Tokens(x, tok_mask), memory)
        return memory, out

    def stream(self, pieces: Iterable[Tensor], memory: Tensor | None = None) -> Tokens:
        """Encode an input given as consecutive pieces, one segment at a time.

        The pieces (any lengths, e.g. a generator reading a file) are re-cut into segments of
        ``segment_len``; only one segment, its context and one piece are held at a time.
        Run it under ``torch.no_grad()`` for inference. Equals :meth:`forward` over the
        concatenated pieces (all samples of the batch the same length).

        Shapes:
            pieces: iterable of (B, L_i) tensors, in order
            memory: (B, M, D) memory to continue from (default: the learned initial memory)
            returns: as :meth:`forward`'s (the final memory, after the running max with
                readout ``"max"``)
        """
        S, C = self.segment_len, self.context_len
        running: Tensor | None = None  # (B, D) readout "max": the per-channel max so far
        buffer: Tensor | None = None  # (B, ≤ C + S): context (≤ C units) + the segment being filled
        held = 0  # units of `buffer` that are context from the previous segment
        for piece in pieces:
            check_shape("StreamingMemoryEncoder piece", piece, ("B", "L"))
            buffer = piece if buffer is None else torch.cat([buffer, piece], dim=1)
            if memory is None:
                memory = self.initial_memory(buffer.shape[0]).to(self._dtype())
            while buffer.shape[1] - held >= S:  # a whole segment is there
                window = buffer[:, : held + S]
                memory, running = self._fold(window, memory, running)
                keep = min(C, held + S)
                buffer, held = buffer[:, held + S - keep :], keep
        if buffer is None:
            raise ValueError("StreamingMemoryEncoder.stream: no input pieces")
        if buffer.shape[1] > held:  # the last, partial segment
            memory, running = self._fold(buffer, memory, running)
        present = torch.ones(memory.shape[0], dtype=torch.bool, device=memory.device)
        if self.readout == "max" and running is None:  # no segment was read
            running = memory.new_full((memory.shape[0], memory.shape[2]), torch.finfo(memory.dtype).min)
        return self._output(memory, present, running)

    def _fold(self, window: Tensor, memory: Tensor, running: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One streamed segment: the new memory and, with readout ``"max"``, the new running max.

        Shapes: window (B, W), memory (B, M, D), running (B, D) or None → (B, M, D), (B, D) or None
        """
        memory, out = self._step(window, torch.ones_like(window, dtype=torch.bool), memory)
        if self.readout == "max":
            running = self._segment_max(out.x, out.mask, running)
        return memory, running

    def extra_repr(self) -> str:
        return (
            f"segment_len={self.segment_len}, context_len={self.context_len}, "
            f"tokens_per_segment={self.tokens_per_segment}, readout={self.readout!r}"
        )
