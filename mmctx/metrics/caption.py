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
               reference length being the closest one; no smoothing. torchmetrics'
               ``bleu_score``. The same definition as the coco-caption toolkit's BLEU-n.
rougeL         ROUGE-L F1 (Lin 2004): longest-common-subsequence precision and recall,
               F with beta = 1, the best reference of each sample, averaged over samples.
               torchmetrics' ``rouge_score(accumulate="best")``. (coco-caption uses beta =
               1.2 and max precision / max recall, so its numbers differ slightly.)
cider          CIDEr-D (Vedantam et al. 2015), as in the coco-caption toolkit: 1..4-gram
               TF-IDF vectors, document frequencies counted over **the references of the
               evaluated split** (a document = one sample's reference set), candidate
               n-gram weights clipped to the reference's, a Gaussian length penalty
               ``exp(-(len_c - len_r)^2 / (2 sigma^2))`` with sigma = 6, averaged over n and
               references, times 10. Range [0, 10] per sample.
exact_match    fraction of samples whose caption equals one of its references.
distinct       distinct generated captions / samples; ``ref_distinct`` is the same ratio
               for the first reference of each sample: a model that says the same thing
               for every input scores far below the references' own ratio.
=============  ==========================================================================

Only torch and torchmetrics are imported (no Lightning).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

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


def caption_tokens(text: str) -> list[str]:
    """Normalised word tokens of a caption: lower-cased, punctuation removed.

    >>> caption_tokens("A dog, two cats.")
    ['a', 'dog', 'two', 'cats']
    """
    text = text.lower()
    for ch in _SPLIT_OFF:
        text = text.replace(ch, f" {ch} ")
    return [w for w in text.split() if w not in _PUNCTUATION and w.strip(_SPLIT_OFF + "'-")]


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


# ----------------------------------------------------------------------------- BLEU, ROUGE-L


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..``max_n`` (cumulative, uniform weights, no smoothing).

    Returns:
        ``{"bleu1": ..., ..., f"bleu{max_n}": ...}``, each in [0, 1].
    """
    from torchmetrics.functional.text import bleu_score

    cands, refs = _normalized(candidates, references)
    if not cands:
        return {f"bleu{n}": 0.0 for n in range(1, max_n + 1)}
    return {f"bleu{n}": float(bleu_score(cands, refs, n_gram=n)) for n in range(1, max_n + 1)}


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over samples of the ROUGE-L F1 against each sample's best reference, in [0, 1]."""
    from torchmetrics.functional.text import rouge_score

    cands, refs = _normalized(candidates, references)
    if not cands:
        return 0.0
    return float(rouge_score(cands, refs, rouge_keys="rougeL", accumulate="best")["rougeL_fmeasure"])


# ----------------------------------------------------------------------------- CIDEr-D


def _ngrams(words: Sequence[str], max_n: int) -> list[Counter]:
    """Counts of the 1..max_n-grams of ``words`` (index n-1 holds the n-grams)."""
    return [Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1)) for n in range(1, max_n + 1)]


def _tfidf(counts: list[Counter], df: Counter, log_num_docs: float) -> tuple[list[dict], list[float]]:
    """TF-IDF vectors (raw term counts × ``log(N) - log(max(1, df))``) and their L2 norms."""
    vecs, norms = [], []
    for by_n in counts:
        vec = {g: tf * (log_num_docs - math.log(max(1.0, df[g]))) for g, tf in by_n.items()}
        vecs.append(vec)
        norms.append(math.sqrt(sum(v * v for v in vec.values())))
    return vecs, norms


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """CIDEr-D of a split (Vedantam et al. 2015; the coco-caption ``CiderD`` scorer).

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
    cands, refs = _normalized(candidates, references)
    if not cands:
        return 0.0, []
    cand_words = [c.split() for c in cands]
    ref_words = [[r.split() for r in rs] for rs in refs]
    ref_counts = [[_ngrams(w, max_n) for w in rs] for rs in ref_words]
    df: Counter = Counter()
    for sample in ref_counts:
        df.update({g for counts in sample for by_n in counts for g in by_n})  # once per sample
    log_num_docs = math.log(float(len(cands)))
    scores = []
    for words, sample_refs, sample_counts in zip(cand_words, ref_words, ref_counts):
        vec_c, norm_c = _tfidf(_ngrams(words, max_n), df, log_num_docs)
        total = 0.0
        for r_words, counts in zip(sample_refs, sample_counts):
            vec_r, norm_r = _tfidf(counts, df, log_num_docs)
            penalty = math.exp(-((len(words) - len(r_words)) ** 2) / (2 * sigma**2))
            per_n = 0.0
            for n in range(max_n):
                dot = sum(min(w, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, w in vec_c[n].items())
                if norm_c[n] != 0 and norm_r[n] != 0:
                    per_n += dot / (norm_c[n] * norm_r[n]) * penalty
            total += per_n / max_n
        scores.append(10.0 * total / len(sample_refs))
    return sum(scores) / len(scores), scores


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


def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Every metric of this module for one split.

    Returns:
        ``bleu1``..``bleu4``, ``rougeL``, ``cider``, ``exact_match``, ``distinct`` (of the
        candidates) and ``ref_distinct`` (of each sample's first reference).
    """
    _check(candidates, references)
    out = bleu(candidates, references)
    out["rougeL"] = rouge_l(candidates, references)
    out["cider"] = cider_d(candidates, references)[0]
    out["exact_match"] = exact_match(candidates, references)
    out["distinct"] = distinct_ratio(candidates)
    out["ref_distinct"] = distinct_ratio([refs[0] for refs in references])
    return out
