"""Evaluation metrics as plain functions (no Lightning): caption metrics over strings,
cross-modal retrieval recall over embeddings, sample diversity of generated samples."""

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
from mmctx.metrics.diversity import group_diversity
from mmctx.metrics.retrieval import caption_groups, recall_at_k

__all__ = [
    "caption_metrics",
    "bleu",
    "rouge_l",
    "cider_d",
    "exact_match",
    "distinct_ratio",
    "caption_tokens",
    "normalize_caption",
    "recall_at_k",
    "caption_groups",
    "group_diversity",
]
