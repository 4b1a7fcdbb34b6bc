"""Helpers for running a task on several processes (DDP)."""

from __future__ import annotations

import torch

__all__ = ["gather_rows"]


def gather_rows(rows: list[dict], world_size: int) -> list[dict]:
    """Every rank's rows on every rank (DDP), duplicates dropped by id (a distributed
    sampler repeats samples to even out the ranks)."""
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list[list[dict] | None] = [None] * world_size
        torch.distributed.all_gather_object(parts, rows)
        rows = [row for part in parts for row in (part or [])]
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            unique.append(row)
    return unique
