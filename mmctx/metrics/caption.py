"""Caption metrics: BLEU-1..4, ROUGE-L, CIDEr-D, exact match and distinct-caption ratio.

Every metric is computed over a whole evaluated split at once — CIDEr-D's document
frequencies are a property of the split, not of a batch — from plain strings:
``candidates[i]`` is the generated caption of sample ``i`` and ``references[i]`` the list of
its reference captions (one or more; COCO-style data has about five).

Text normalisation (:func:`caption_tokens`), applied to candidates and references alike
before every metric: lower-case, punctuation split off and dropped (the punctuation list
of the coco-caption toolkit's PTB tokenizer), whitespace tokens. So ``"A cat, a dog."`` and
``"a cat a dog"`` are the same caption.

=============  ==========================================================================
metric         definition
=============  ==========================================================================
bleu1..bleu4   corpus BLEU-n (Papineni et al. 2002): geometric mean of the clipped
               1..n-gram precisions with uniform weights, times the brevity penalty, the
               reference length being the closest one (the shorter on a tie); no
               smoothing but coco's epsilons (``(matches + 1e-15) / (n-grams + 1e-9)``).
               Equal to the coco-caption toolkit's BLEU-n (pycocoevalcap ``Bleu``).
rougeL         ROUGE-L (Lin 2004): the best longest-common-subsequence precision P and
               recall R over a sample's references, ``(1 + b^2) P R / (R + b^2 P)``,
               averaged over samples; b = 1.2 as coco-caption (pycocoevalcap ``Rouge``),
               ``rouge_beta`` to change it. (Earlier versions: b = 1 and the reference with the
               best F1, torchmetrics' ``rouge_score(accumulate="best")``.)
cider          CIDEr-D (Vedantam et al. 2015), as in the coco-caption toolkit: 1..4-gram
               TF-IDF vectors, document frequencies counted over **the references of the
               evaluated split** (a document = one sample's reference set), candidate
               n-gram weights clipped to the reference's, a Gaussian length penalty
               ``exp(-(len_c - len_r)^2 / (2 sigma^2))`` with sigma = 6, averaged over n and
               references, times 10. Range [0, 10] per sample. Equal to the
               coco-caption toolkit's (pycocoevalcap ``Cider``, which is CIDEr-D).
exact_match    fraction of samples whose caption equals one of its references.
distinct       distinct generated captions / samples; ``ref_distinct`` is the same ratio
               for the first reference of each sample: a model that says the same thing
               for every input scores far below the references' own ratio.
=============  ==========================================================================

Pure Python (the standard library only): each caption is tokenised and its n-grams counted
once for every metric; ROUGE-L's longest common subsequence is bit-parallel. On 1,000 long
captions with five references each the whole set runs faster than pycocoevalcap's
scorers (``benchmarks/caption_metrics.py``, docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from operator import mul, sub

try:  # the C loop behind Counter.update, into a plain dict (no Counter.__init__ per caption)
    from collections import _count_elements  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Python implementations

    def _count_elements(mapping: dict, iterable) -> None:  # type: ignore[no-redef]
        for item in iterable:
            mapping[item] = mapping.get(item, 0) + 1

__all__ = [
    "caption_tokens",
    "normalize_caption",
    "bleu",
    "rouge_l",
    "cider_d",
    "exact_match",
    "distinct_ratio",
    "caption_metrics",
]

#: Punctuation the coco-caption PTB tokenizer removes.
_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"']
)
_SPLIT_OFF = ".,!?;:\"()[]{}`"
_SPLIT_TABLE = str.maketrans({ch: f" {ch} " for ch in _SPLIT_OFF})
_STRIP = _SPLIT_OFF + "'-"


def caption_tokens(text: str) -> list[str]:
    """Normalised word tokens of a caption: lower-cased, punctuation removed.

    >>> caption_tokens("A dog, two cats.")
    ['a', 'dog', 'two', 'cats']
    """
    return [w for w in text.lower().translate(_SPLIT_TABLE).split() if w not in _PUNCTUATION and w.strip(_STRIP)]


def normalize_caption(text: str) -> str:
    """:func:`caption_tokens` joined by single spaces (what every metric compares)."""
    return " ".join(caption_tokens(text))


def _check(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(candidates, str) or not isinstance(references, Sequence) or isinstance(references, str):
        raise TypeError("candidates must be a list of strings and references a list of lists of strings")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of strings, got {refs!r}")


def _normalized(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    _check(candidates, references)
    return [normalize_caption(c) for c in candidates], [[normalize_caption(r) for r in refs] for refs in references]


# ----------------------------------------------------------------------------- shared n-gram counts


class _Counted:
    """Every caption of a split tokenised and its 1..max_n-gram counts taken, once.

    ``cand[i]`` / ``refs[i][j]``: ``(words, counts)`` where ``counts[n - 1]`` maps each n-gram
    (a word for n = 1, a tuple of n words above) to its count in the caption.
    """

    def __init__(self, candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int) -> None:
        _check(candidates, references)
        self.max_n = max_n
        cache: dict[str, tuple[list[str], list[dict]]] = {}  # identical captions are counted once
        self.cand = [self._count(c, cache) for c in candidates]
        self.refs = [[self._count(r, cache) for r in rs] for rs in references]

    def _count(self, text: str, cache: dict) -> tuple[list[str], list[dict]]:
        hit = cache.get(text)
        if hit is None:
            words = caption_tokens(text)
            counts: list[dict] = []
            for n in range(1, self.max_n + 1):
                by_n: dict = {}
                _count_elements(by_n, words if n == 1 else zip(*[words[i:] for i in range(n)]))
                counts.append(by_n)
            hit = cache[text] = (words, counts)
        return hit


# ----------------------------------------------------------------------------- BLEU

#: coco-caption's BleuScorer adds these to every precision's numerator / denominator (and to
#: the length ratio), so a zero precision gives a tiny positive score, never a division by 0.
_TINY = 1e-15
_SMALL = 1e-9


def _bleu(counted: _Counted, max_n: int) -> dict[str, float]:
    if not counted.cand:
        return {f"bleu{n}": 0.0 for n in range(1, max_n + 1)}
    correct = [0] * max_n
    guess = [0] * max_n
    test_len = ref_len = 0
    for (words, counts), refs in zip(counted.cand, counted.refs):
        length = len(words)
        test_len += length
        # closest reference length, the shorter one on a tie (coco's min((|l - len|, l)))
        ref_len += min((abs(len(r) - length), len(r)) for r, _ in refs)[1]
        for k in range(max_n):
            guess[k] += max(0, length - k)
            cand_k = counts[k]
            if not cand_k:
                continue
            best: dict = {}  # highest count in one reference, of the candidate's n-grams
            for _, r_counts in refs:
                ref_k = r_counts[k]
                for g in cand_k.keys() & ref_k.keys():
                    if ref_k[g] > best.get(g, 0):
                        best[g] = ref_k[g]
            for g, b in best.items():
                c = cand_k[g]
                correct[k] += c if c < b else b
    out = {}
    product = 1.0
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    for k in range(max_n):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        out[f"bleu{k + 1}"] = product ** (1.0 / (k + 1)) * penalty
    return out


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..``max_n`` (cumulative, uniform weights), exactly as coco-caption's
    ``Bleu`` scorer (pycocoevalcap) computes it.

    Clipped n-gram matches and candidate n-grams are pooled over the split; the reference
    length of a sample is its closest reference length (the shorter on a tie); the brevity
    penalty ``exp(1 - r / c)`` applies when ``c < r``. No smoothing, but coco's epsilons:
    each precision is ``(matches + 1e-15) / (n-grams + 1e-9)``, so an order with no match
    scores a tiny positive number (about 1e-4 for BLEU-4 of one short caption), not 0.

    Returns:
        ``{"bleu1": ..., ..., f"bleu{max_n}": ...}``, each in [0, 1].
    """
    return _bleu(_Counted(candidates, references, max_n), max_n)


# ----------------------------------------------------------------------------- ROUGE-L


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists: bit-parallel
    (Allison–Dix / Hyyrö 2004), one big-integer step per token of ``b``."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    match: dict[str, int] = {}
    for i, w in enumerate(a):
        match[w] = match.get(w, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for w in b:
        m = match.get(w)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _rouge_l(counted: _Counted, beta: float) -> float:
    if not counted.cand:
        return 0.0
    beta2 = beta * beta
    total = 0.0
    for (cand, _), refs in zip(counted.cand, counted.refs):
        best_p = best_r = 0.0
        for ref, _ in refs:
            if not cand and not ref:  # two empty captions are identical (coco: "" vs "")
                best_p = best_r = 1.0
                continue
            lcs = _lcs(cand, ref)
            if lcs:
                best_p = max(best_p, lcs / len(cand))
                best_r = max(best_r, lcs / len(ref))
        if best_p and best_r:
            total += (1 + beta2) * best_p * best_r / (best_r + beta2 * best_p)
    return total / len(counted.cand)


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Mean over samples of ROUGE-L (Lin 2004) as coco-caption's ``Rouge`` scorer computes it.

    For each sample, ``P`` and ``R`` are the best longest-common-subsequence precision and
    recall over its references (each maximised on its own) and the score is
    ``(1 + beta^2) P R / (R + beta^2 P)``. ``beta = 1.2`` (the default) is coco-caption's;
    ``beta = 1`` gives the plain F1 of P and R.

    Returns:
        the mean score, in [0, 1].
    """
    return _rouge_l(_Counted(candidates, references, 1), beta)


# ----------------------------------------------------------------------------- CIDEr-D


def _norms(counts: list[dict], idf2: dict, idf2_unseen: float, max_n: int) -> list[float]:
    """L2 norms of the TF-IDF vectors (term count × idf) of each n-gram order."""
    out = []
    for k in range(max_n):
        tfs = counts[k].values()
        weights = map(idf2.get, counts[k], repeat(idf2_unseen))
        out.append(math.sqrt(sum(map(mul, map(mul, tfs, tfs), weights))))
    return out


def _cider_d(counted: _Counted, max_n: int, sigma: float) -> tuple[float, list[float]]:
    # TF-IDF weights are never built as vectors: with g = tf * idf and idf >= 0,
    # min(g_c, g_r) * g_r = min(tf_c, tf_r) * tf_r * idf^2, summed over the shared n-grams.
    if not counted.cand:
        return 0.0, []
    df: Counter = Counter()
    for refs in counted.refs:
        seen: set = set()
        for _, counts in refs:
            for k in range(max_n):
                seen.update(counts[k])
        df.update(seen)  # once per sample
    log_num_docs = math.log(float(len(counted.cand)))
    idf = map(sub, repeat(log_num_docs), map(math.log, df.values()))  # log(N) - log(df), df >= 1
    idf2 = dict(zip(df.keys(), map(pow, idf, repeat(2))))
    idf2_unseen = log_num_docs**2  # df = 0 counts as 1
    two_sigma2 = 2 * sigma**2
    ref_norms: dict[int, list[float]] = {}  # by id of the counts: a caption shared by samples once
    scores = []
    for (words, counts), refs in zip(counted.cand, counted.refs):
        norm_c = _norms(counts, idf2, idf2_unseen, max_n)
        total = 0.0
        for r_words, r_counts in refs:
            norm_r = ref_norms.get(id(r_counts))
            if norm_r is None:
                norm_r = ref_norms[id(r_counts)] = _norms(r_counts, idf2, idf2_unseen, max_n)
            per_n = 0.0
            for k in range(max_n):
                if norm_c[k] == 0 or norm_r[k] == 0:
                    continue
                ck, rk = counts[k], r_counts[k]
                dot = 0.0
                for g in ck.keys() & rk.keys():  # shared n-grams only
                    tc, tr = ck[g], rk[g]
                    dot += (tc if tc < tr else tr) * tr * idf2[g]
                per_n += dot / (norm_c[k] * norm_r[k])
            penalty = math.exp(-((len(words) - len(r_words)) ** 2) / two_sigma2)
            total += per_n * penalty / max_n
        scores.append(10.0 * total / len(refs))
    return sum(scores) / len(scores), scores


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """CIDEr-D of a split (Vedantam et al. 2015; coco-caption's ``Cider`` scorer in
    pycocoevalcap, which clips and length-penalises as CIDEr-D does).

    For sample ``i`` with candidate ``c`` and references ``r_1..r_m``::

        CIDEr-D_n(c, r_j) = exp(-(l_c - l_rj)^2 / (2 sigma^2))
                            * sum_g min(g_c, g_rj) * g_rj / (|g_c| |g_rj|)
        CIDEr-D(c)        = 10 / m * sum_j mean_n CIDEr-D_n(c, r_j)

    where ``g`` is the TF-IDF vector of the n-grams (term count × ``log(N / df)``), ``N`` is
    the number of samples and ``df`` the number of samples whose references contain the
    n-gram — **the document frequencies come from the references of the evaluated split**
    (``candidates``/``references`` given here), as in the coco-caption "corpus" mode. The
    ``min`` clips candidate n-gram weights to the reference's (repeating a good word does
    not pay) and ``l`` are lengths in words. An n-gram present in every sample's references
    weighs nothing; an n-gram order longer than a caption contributes 0.

    Args:
        candidates: one generated caption per sample.
        references: the reference captions of each sample (at least one).
        max_n: highest n-gram order (4 in the paper).
        sigma: width of the length penalty (6 in the paper).

    Returns:
        the corpus score (mean over samples) and the per-sample scores.
    """
    return _cider_d(_Counted(candidates, references, max_n), max_n, sigma)


# ----------------------------------------------------------------------------- the rest


def exact_match(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Fraction of samples whose normalised candidate equals one of its normalised references."""
    cands, refs = _normalized(candidates, references)
    if not cands:
        return 0.0
    return sum(c in rs for c, rs in zip(cands, refs)) / len(cands)


def distinct_ratio(captions: Sequence[str]) -> float:
    """Distinct normalised captions / captions (1.0: all different; 1/N: all the same)."""
    if not captions:
        return 0.0
    return len({normalize_caption(c) for c in captions}) / len(captions)


def caption_metrics(
    candidates: Sequence[str], references: Sequence[Sequence[str]], rouge_beta: float = 1.2
) -> dict[str, float]:
    """Every metric of this module for one split; each caption is tokenised and its n-grams
    counted once for all of them.

    Args:
        rouge_beta: ROUGE-L's beta (:func:`rouge_l`); 1.2 is coco-caption's.

    Returns:
        ``bleu1``..``bleu4``, ``rougeL``, ``cider``, ``exact_match``, ``distinct`` (of the
        candidates) and ``ref_distinct`` (of each sample's first reference).
    """
    counted = _Counted(candidates, references, 4)
    out = _bleu(counted, 4)
    out["rougeL"] = _rouge_l(counted, rouge_beta)
    out["cider"] = _cider_d(counted, 4, 6.0)[0]
    num = max(1, len(counted.cand))  # an empty split scores 0
    cand_words = [words for words, _ in counted.cand]
    matches = sum(any(c == r for r, _ in refs) for c, refs in zip(cand_words, counted.refs))
    out["exact_match"] = matches / num
    out["distinct"] = len({tuple(c) for c in cand_words}) / num
    out["ref_distinct"] = len({tuple(refs[0][0]) for refs in counted.refs}) / num
    return out
