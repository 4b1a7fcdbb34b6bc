"""Evaluation metrics over plain strings (no Lightning): caption metrics."""

from mmctx.metrics.caption import (
    bleu,
    caption_metrics,
    caption_tokens,
    cider_d,
    distinct_ratio,
    exact_match,
    normalize_caption,
    rouge_l,
)

__all__ = [
    "caption_metrics",
    "bleu",
    "rouge_l",
    "cider_d",
    "exact_match",
    "distinct_ratio",
    "caption_tokens",
    "normalize_caption",
]
