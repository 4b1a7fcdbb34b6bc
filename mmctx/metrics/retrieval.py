"""Cross-modal retrieval: recall@k, and which samples count as positives of each other."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

__all__ = ["caption_groups", "recall_at_k"]


def caption_groups(texts: list[str]) -> Tensor:
    """One int64 per text, equal for identical texts (a stable hash: the same on every
    process, so it can be gathered under DDP); samples of one group are positives of each
    other. Shapes: → (B,) long."""
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little", signed=True) for t in texts],
        dtype=torch.long,
    )


def recall_at_k(query: Tensor, gallery: Tensor, positives: Tensor, ks: list[int]) -> dict[int, float]:
    """Retrieval recall@k: the fraction of queries with a positive among their k nearest
    gallery items (by dot product, i.e. cosine for normalised embeddings).

    Shapes:
        query: (Q, E); gallery: (G, E); positives: (Q, G) bool, True where gallery item g
        is a right answer for query q (e.g. the same caption)
        returns: {k: recall in [0, 1]}
    """
    sim = query.float() @ gallery.float().t()  # (Q, G)
    top = sim.topk(min(max(ks), sim.shape[1]), dim=1).indices  # (Q, k_max)
    hits = positives.gather(1, top)  # (Q, k_max)
    return {k: float(hits[:, :k].any(dim=1).float().mean()) for k in ks}
