"""Learning-rate schedules that learn the run's length from the trainer."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosineLR"]


class WarmupCosineLR(LambdaLR):
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak rate.

    ``total_steps`` may be left unset in a config: the tasks call :meth:`set_total_steps`
    with ``trainer.estimated_stepping_batches`` before training starts. Step it every
    optimizer step (``interval: step``).

    Args:
        optimizer: the wrapped optimizer.
        warmup_steps: steps of linear warm-up from 0.
        total_steps: total optimizer steps of the run (None: filled in by the task).
        min_lr_ratio: final learning rate as a fraction of the peak.
    """

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int = 0, total_steps: int | None = None, min_lr_ratio: float = 0.0
    ) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self._factor)

    def set_total_steps(self, total_steps: int) -> None:
        if self.total_steps is None:
            self.total_steps = int(total_steps)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / max(1, self.warmup_steps)
        total = self.total_steps if self.total_steps is not None else step + 1
        progress = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
