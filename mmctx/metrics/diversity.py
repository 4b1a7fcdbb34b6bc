"""Sample diversity of generated (or real) samples: how far apart the samples of one condition
are, the number a collapsed generator drives to 0 (benchmarks/score_gan*.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["group_diversity"]


def group_diversity(x: Tensor, groups: Sequence[int]) -> float:
    """Mean over groups (of two or more members) of the mean pairwise RMS distance between
    the group's members: ``‖a - b‖₂ / √P`` for samples of P values each.

    Shapes: x (R, ...) any sample shape; groups: R group ids.

    Returns:
        The mean, or NaN when no group has two members.

    Raises:
        ValueError: when ``groups`` does not give one id per sample.
    """
    if len(groups) != x.shape[0]:
        raise ValueError(f"group_diversity: {len(groups)} group ids for {x.shape[0]} samples")
    by_group: dict[int, list[int]] = defaultdict(list)
    for i, gid in enumerate(groups):
        by_group[int(gid)].append(i)
    values = []
    for members in by_group.values():
        n = len(members)
        if n < 2:
            continue
        flat = x[members].flatten(1).float()  # (n, P)
        d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5  # (n, n) RMS distances, 0 on the diagonal
        values.append((d.sum() / (n * (n - 1))).item())
    return sum(values) / len(values) if values else float("nan")
