"""Search for autoregressive decoders: greedy, sampling, beam search and logits processing.

The searches know nothing about the model: they call ``step(sequences) -> logits`` for the
next-token logits of each row and, in beam search, ``reorder(rows)`` when beams are
re-ranked so a KV cache can follow. :class:`~mmctx.heads.decoder.TextDecoder.generate`
wires them to its cached or uncached forward pass.

Rows: greedy and sampling decode ``N = B`` rows; beam search decodes ``N = B * K`` rows,
the ``K`` beams of sample ``b`` being rows ``b*K .. b*K + K-1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "LogitsProcessing",
    "apply_repetition_penalty",
    "ban_repeated_ngrams",
    "filter_top_k",
    "filter_top_p",
    "greedy_search",
    "beam_search",
]

#: ``step(sequences (N, t)) -> next-token logits (N, V)``; ``sequences`` start with BOS.
StepFn = Callable[[Tensor], Tensor]
#: ``reorder(rows (N,))``: row ``i`` of the next step continues row ``rows[i]`` of this one.
ReorderFn = Callable[[Tensor], None]


def apply_repetition_penalty(logits: Tensor, generated: Tensor, penalty: float) -> Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019) on tokens already generated.

    A positive logit is divided by ``penalty``, a negative one multiplied by it, so with
    ``penalty > 1`` a token already generated always becomes less likely.

    Shapes:
        logits: (N, V)
        generated: (N, t) token ids generated so far (BOS excluded)
        returns: (N, V)
    """
    if penalty == 1.0 or generated.shape[1] == 0:
        return logits
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen.scatter_(1, generated, torch.ones_like(generated, dtype=torch.bool))  # (N, V)
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def ban_repeated_ngrams(scores: Tensor, generated: Tensor, n: int) -> Tensor:
    """Set to ``-inf`` every token that would complete an n-gram already in ``generated``.

    Vectorized over rows: all n-grams of each row are compared with the row's last
    ``n - 1`` tokens, and the tokens that followed a match are banned.

    Shapes:
        scores: (N, V) logits or log-probabilities
        generated: (N, t) token ids generated so far (BOS excluded)
        returns: (N, V)
    """
    t = generated.shape[1]
    if n <= 0 or t < n:
        return scores
    windows = generated.unfold(1, n, 1)  # (N, t-n+1, n): every n-gram
    prefix = generated[:, t - n + 1 :]  # (N, n-1): the n-gram the next token would complete
    match = (windows[..., :-1] == prefix[:, None, :]).all(-1)  # (N, t-n+1)
    # scatter_add, not scatter: one token may follow several windows, matching or not
    hits = torch.zeros(scores.shape, dtype=torch.long, device=scores.device)
    hits.scatter_add_(1, windows[..., -1], match.long())  # (N, V)
    return scores.masked_fill(hits > 0, float("-inf"))


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row (``k <= 0``: keep all).

    Shapes: logits (N, V) → (N, V), the others set to ``-inf``.
    """
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (N, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens
    whose probability reaches ``p``; the most likely token is always kept.

    Shapes: logits (N, V) → (N, V), the others set to ``-inf``.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (N, V)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above
    remove_sorted = mass_before >= p  # the set already reached p without this token
    remove = torch.zeros_like(remove_sorted).scatter(1, order, remove_sorted)  # (N, V) back in vocab order
    return logits.masked_fill(remove, float("-inf"))


@dataclass
class LogitsProcessing:
    """The logits adjustments every search applies before it picks tokens.

    Attributes:
        banned_ids: tokens never generated (BOS, PAD).
        repetition_penalty: CTRL penalty on tokens already generated (1.0: off).
        no_repeat_ngram_size: ban tokens that would repeat an n-gram (0: off).
    """

    banned_ids: tuple[int, ...] = ()
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    _banned: Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def penalize(self, logits: Tensor, generated: Tensor) -> Tensor:
        """Soft adjustments, applied to raw logits (before any softmax).

        Shapes: logits (N, V), generated (N, t) → (N, V).
        """
        return apply_repetition_penalty(logits, generated, self.repetition_penalty)

    def ban(self, scores: Tensor, generated: Tensor) -> Tensor:
        """Hard bans (``-inf``), applied after the softmax in beam search so the scores of
        the remaining tokens stay the model's log-probabilities.

        Shapes: scores (N, V), generated (N, t) → (N, V).
        """
        if self.banned_ids:
            if self._banned is None or self._banned.device != scores.device:
                self._banned = torch.tensor(self.banned_ids, device=scores.device)  # built once, not every step
            scores = scores.index_fill(1, self._banned, float("-inf"))
        return ban_repeated_ngrams(scores, generated, self.no_repeat_ngram_size)


def greedy_search(
    step: StepFn,
    start: Tensor,
    max_new_tokens: int,
    processing: LogitsProcessing,
    eos_id: int | None,
    pad_id: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Greedy decoding, or ancestral sampling with temperature / top-k / top-p.

    Stops when every row has produced ``eos_id`` (if set) or after ``max_new_tokens``.

    Args:
        step: next-token logits of every row, given the sequences so far.
        start: the first token of every row (BOS).
        max_new_tokens: most tokens to generate.
        processing: repetition penalty, n-gram and special-token bans.
        eos_id: end-of-sequence token, or None to always generate ``max_new_tokens``.
        pad_id: written after a row's EOS.
        do_sample: sample instead of taking the arg-max.
        temperature: divides the logits before sampling.
        top_k: sample among the ``k`` most likely tokens only (0: all).
        top_p: sample within the nucleus of probability ``top_p`` (1.0: all).
        generator: random source of the sampling, for reproducible samples.

    Shapes:
        start: (N, 1) long
        returns: (N, T_out) generated ids (start excluded), ``T_out <= max_new_tokens``,
        ``pad_id`` after each row's EOS
    """
    N = start.shape[0]
    seqs = start.new_full((N, 1 + max_new_tokens), pad_id)  # (N, 1 + T_max), filled as we go
    seqs[:, :1] = start
    finished = torch.zeros(N, dtype=torch.bool, device=start.device)
    steps = 0
    for t in range(max_new_tokens):
        steps = t + 1
        generated = seqs[:, 1 : 1 + t]  # (N, t)
        logits = step(seqs[:, : 1 + t]).float()  # (N, V)
        logits = processing.ban(processing.penalize(logits, generated), generated)
        if do_sample:
            logits = filter_top_p(filter_top_k(logits / temperature, top_k), top_p)
            next_tokens = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)  # (N,)
        else:
            next_tokens = logits.argmax(-1)  # (N,)
        if eos_id is not None:
            next_tokens = next_tokens.masked_fill(finished, pad_id)
            finished = finished | (next_tokens == eos_id)
        seqs[:, 1 + t] = next_tokens
        if eos_id is not None and bool(finished.all()):
            break
    return seqs[:, 1 : 1 + steps]


def beam_search(
    step: StepFn,
    reorder: ReorderFn,
    start: Tensor,
    num_beams: int,
    max_new_tokens: int,
    processing: LogitsProcessing,
    eos_id: int | None,
    pad_id: int,
    length_penalty: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Beam search with per-sample beams, GNMT/HF length penalty and early stopping.

    Every step expands each of a sample's ``K`` beams by every token and keeps the ``2K``
    best continuations: those ending in EOS among the best ``K`` become finished hypotheses,
    scored ``sum log p / length ** length_penalty`` (length counts the generated tokens, EOS
    included); the best ``K`` others are the next beams. A sample is done once it holds
    ``K`` finished hypotheses and none of its live beams can still beat them (a sound bound,
    not a heuristic: log-probabilities only fall); the search stops when every sample is
    done or after ``max_new_tokens``, when the live beams join the finished ones. The best
    hypothesis of each sample is returned.

    Args:
        step: next-token logits of every row, given the sequences so far.
        reorder: told which row each new beam continues (to reorder a KV cache).
        start: the first token of every row (BOS), ``K`` rows per sample.
        num_beams: K.
        max_new_tokens: most tokens to generate.
        processing: repetition penalty (on logits), n-gram and special-token bans (on
            log-probabilities).
        eos_id: end-of-sequence token, or None (every hypothesis has ``max_new_tokens``).
        pad_id: written after a hypothesis' EOS.
        length_penalty: exponent of the length normalisation (0: raw log-probability;
            > 0 favours longer sequences).

    Shapes:
        start: (B * K, 1) long
        returns: sequences (B, T_out) without the start token, ``pad_id`` after EOS, and
        their scores (B,)
    """
    N, K = start.shape[0], num_beams
    if N % K != 0:
        raise ValueError(f"beam_search: start has {N} rows, not a multiple of num_beams={K}")
    B, L, device = N // K, 1 + max_new_tokens, start.device
    seqs = start.new_full((N, L), pad_id)  # (B*K, L)
    seqs[:, :1] = start
    # only beam 0 is live at first, so the K beams do not start as K copies of one hypothesis
    beam_scores = torch.zeros(B, K, device=device)
    beam_scores[:, 1:] = float("-inf")
    fin_seqs = seqs.new_full((B, K, L), pad_id)
    fin_scores = torch.full((B, K), float("-inf"), device=device)
    fin_lens = torch.zeros(B, K, dtype=torch.long, device=device)
    fin_count = torch.zeros(B, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    sample_offset = torch.arange(B, device=device)[:, None] * K  # (B, 1): first row of each sample
    steps = 0
    for t in range(max_new_tokens):
        steps = t + 1
        generated = seqs[:, 1 : 1 + t]  # (B*K, t)
        logits = step(seqs[:, : 1 + t]).float()  # (B*K, V)
        logp = processing.ban(processing.penalize(logits, generated).log_softmax(-1), generated)
        V = logp.shape[-1]
        candidates = (beam_scores.reshape(N, 1) + logp).view(B, K * V)  # (B, K*V)
        num_candidates = min(2 * K, K * V)
        top_scores, top_index = candidates.topk(num_candidates, dim=1)  # (B, 2K)
        rows = top_index // V + sample_offset  # (B, 2K): the row each candidate extends
        tokens = top_index % V  # (B, 2K)
        rank = torch.arange(num_candidates, device=device)
        if eos_id is not None:
            is_eos = tokens == eos_id
            add = is_eos & (rank < K)[None] & ~done[:, None] & top_scores.isfinite()  # (B, 2K)
            if bool(add.any()):
                new_seqs = seqs[rows]  # (B, 2K, L)
                new_seqs[..., 1 + t] = eos_id
                new_scores = (top_scores / (t + 1) ** length_penalty).masked_fill(~add, float("-inf"))
                fin_scores, keep = torch.cat([fin_scores, new_scores], 1).topk(K, dim=1)  # (B, K)
                fin_seqs = torch.cat([fin_seqs, new_seqs], 1).gather(1, keep[..., None].expand(-1, -1, L))
                fin_lens = torch.cat([fin_lens, torch.full_like(tokens, t + 1)], 1).gather(1, keep)
                fin_count = fin_count + add.sum(1)
        else:
            is_eos = torch.zeros_like(tokens, dtype=torch.bool)
        # next beams: the K best candidates that do not end in EOS (each beam has one EOS
        # continuation, so at least K of the 2K candidates do not)
        pick = (is_eos.long() * num_candidates + rank).argsort(dim=1)[:, :K]  # (B, K)
        beam_scores = top_scores.gather(1, pick)  # (B, K)
        source = rows.gather(1, pick).reshape(N)  # (B*K,)
        seqs = seqs[source]
        seqs[:, 1 + t] = tokens.gather(1, pick).reshape(N)
        reorder(source)
        if eos_id is not None:
            # done: K finished hypotheses that no live beam can beat any more. A live beam's
            # log-probability only falls; its normalised score is best at the longest length
            # when length_penalty > 0, at its current one otherwise.
            best_live = beam_scores.max(1).values  # (B,)
            longest = max_new_tokens if length_penalty > 0 else t + 1
            beaten = best_live / longest**length_penalty <= fin_scores[:, -1]
            done = done | ((fin_count >= K) & beaten)
            if bool(done.all()):
                break
    # samples still running when the budget ran out: their live beams compete too
    live_scores = (beam_scores / steps**length_penalty).masked_fill(done[:, None], float("-inf"))
    all_scores = torch.cat([fin_scores, live_scores], 1)  # (B, 2K)
    all_seqs = torch.cat([fin_seqs, seqs.view(B, K, L)], 1)  # (B, 2K, L)
    all_lens = torch.cat([fin_lens, torch.full_like(fin_lens, steps)], 1)  # (B, 2K)
    best = all_scores.argmax(1)  # (B,)
    batch = torch.arange(B, device=device)
    out = all_seqs[batch, best, 1 : 1 + steps]  # (B, steps)
    t_out = int(all_lens[batch, best].max())
    return out[:, :t_out], all_scores[batch, best]
