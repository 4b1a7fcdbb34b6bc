"""Faults: a guard against non-finite losses and gradients (checkpoint I/O is in
:mod:`mmctx.trainers.checkpoints`)."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor

__all__ = ["NonFiniteGuard", "NonFiniteLossError"]

_ACTIONS = ("skip", "stop")


class NonFiniteLossError(RuntimeError):
    """Raised by :class:`NonFiniteGuard` with ``action="stop"``."""


class NonFiniteGuard(L.Callback):
    """Detects a NaN/Inf training loss (or gradient) before the optimizer step, and skips
    that step or stops the run.

    Checked after ``backward``, before ``optimizer.step()``: the loss, each loss term the task
    exposes (a ``loss_terms: dict[str, Tensor]`` attribute set in ``training_step``, e.g.
    :class:`~mmctx.trainers.DistillationTask`'s ``kd`` and ``ce``) and, with
    ``check_gradients``, every parameter's gradient. On a fault:

    * ``action="skip"``: every gradient is set to ``None``, so the optimizer leaves every
      parameter (and its moments) untouched for this step; a warning names the step, the
      batch ids and the offending term; ``skipped`` records it. After ``max_skips``
      consecutive skipped steps the run stops (a loss that stays NaN is not transient).
    * ``action="stop"``: raises :class:`NonFiniteLossError` with the same information.

    Lightning's own tools are complementary: ``Trainer(detect_anomaly=True)`` finds the op
    that produced a NaN in backward (slow), ``EarlyStopping(check_finite=True)`` stops on a
    non-finite *monitored* metric, after the fact.

    YAML::

        - class_path: mmctx.trainers.NonFiniteGuard
          init_args: {action: skip}

    Args:
        action: ``"skip"`` or ``"stop"``.
        check_gradients: also check the gradients (a finite loss can have NaN gradients).
        max_skips: consecutive skipped steps after which ``skip`` stops anyway (0: never).
    """

    def __init__(self, action: str = "skip", check_gradients: bool = True, max_skips: int = 10) -> None:
        super().__init__()
        if action not in _ACTIONS:
            raise ValueError(f"NonFiniteGuard: action must be one of {_ACTIONS}, got {action!r}")
        self.action = action
        self.check_gradients = check_gradients
        self.max_skips = max_skips
        self.skipped: list[dict] = []
        self._consecutive = 0
        self._batch_ids: list[str] = []
        self._batch_idx = -1
        self._loss: Tensor | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._batch_ids = list(getattr(batch, "ids", []) or [])
        self._batch_idx = batch_idx
        self._loss = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self._loss = loss.detach()

    def _offending(self, pl_module: L.LightningModule) -> list[str]:
        bad = []
        if self._loss is not None and not bool(torch.isfinite(self._loss).all()):
            bad.append(f"loss = {self._loss.float().cpu().tolist()}")
        terms = getattr(pl_module, "loss_terms", None) or {}
        for name, value in terms.items():
            if isinstance(value, Tensor) and not bool(torch.isfinite(value.detach()).all()):
                bad.append(f"loss term {name!r} = {value.detach().float().cpu().tolist()}")
            elif isinstance(value, float) and not math.isfinite(value):
                bad.append(f"loss term {name!r} = {value}")
        if self.check_gradients and not bad:  # a NaN loss makes every gradient NaN: say so once
            grads = [n for n, p in pl_module.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            if grads:
                shown = ", ".join(grads[:5]) + (f" and {len(grads) - 5} more" if len(grads) > 5 else "")
                bad.append(f"non-finite gradient of {shown}")
        return bad

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        bad = self._offending(pl_module)
        if not bad:
            self._consecutive = 0
            return
        where = (
            f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx}), "
            f"batch ids {self._batch_ids}"
        )
        message = f"NonFiniteGuard: {'; '.join(bad)} at {where}"
        self._consecutive += 1
        if self.action == "stop" or (self.max_skips and self._consecutive > self.max_skips):
            if self.action == "skip":
                message += f" ({self._consecutive} consecutive non-finite steps, max_skips={self.max_skips})"
            raise NonFiniteLossError(message)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # torch optimizers skip parameters without a gradient
        self.skipped.append(
            {"step": trainer.global_step, "batch_idx": self._batch_idx, "ids": self._batch_ids, "terms": bad}
        )
        pl_module.log("train/skipped_steps", float(len(self.skipped)), on_step=True, on_epoch=False)
        print(f"{message}: optimizer step skipped", flush=True)
