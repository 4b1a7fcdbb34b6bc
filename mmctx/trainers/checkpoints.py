"""Faults: a guard against non-finite losses and gradients, checkpoints also written as
safetensors, and a weights loader that refuses a checkpoint of another architecture."""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn

from mmctx.trainers.base import load_submodules

__all__ = [
    "AtomicCheckpointIO",
    "Checkpoint",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "SafetensorsCheckpoint",
    "atomic_write",
    "load_weights",
    "save_safetensors",
]

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


def save_safetensors(module: nn.Module, path: str | Path) -> Path:
    """Write ``module``'s state dict as safetensors, atomically.

    The file is written to a temporary file in the same folder and moved over ``path`` with
    ``os.replace``, so a crash never leaves a half-written file under the final name.
    Tensors are saved contiguous and on the CPU; tied tensors are stored once per name.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        if tensor.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        state[key] = tensor
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "module": type(module).__name__}))
    return path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk (fsync), then
    move it over ``path`` with ``os.replace`` — atomic on POSIX and Windows within one
    filesystem, which a temporary file in the same folder guarantees. A crash or SIGKILL at
    any moment leaves either the old complete file or the new complete one under ``path``
    (and at worst a stray ``.<name>.*.tmp``), never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name beside the target, created like any file (mkstemp's would be mode 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes every checkpoint atomically (:func:`atomic_write`).

    Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary
    file lives in the system temp folder; when that is another filesystem than the run folder
    the final move is a copy, and a job killed during it leaves a truncated ``last.ckpt``.
    This plug-in writes beside the target instead (local paths; remote URLs fall back to
    Lightning's writer). The ``mmctx`` CLI installs it by default (``trainer.plugins``); in
    Python: ``L.Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the last epoch's, as before Lightning 2.6.

    Since Lightning 2.6.0 ``save_last=True`` rewrites ``last.ckpt`` only when a top-k
    checkpoint is saved at the same step: with ``monitor`` and ``save_top_k=1`` it is a copy
    of the best one, and ``--ckpt_path last`` resumes (or tests) the best epoch, not the last.
    This callback also writes ``last.ckpt`` when no top-k checkpoint was saved. Same
    arguments as ``ModelCheckpoint``; in YAML::

        - class_path: mmctx.trainers.Checkpoint
          init_args: {monitor: val/acc, mode: max, filename: best, save_last: true}
    """

    def _save_last_too(self, trainer: L.Trainer, at_train_epoch_end: bool) -> None:
        if (
            self.save_last is True
            and not self._should_skip_saving_checkpoint(trainer)  # also skips when a save just happened
            and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_too(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_too(trainer, at_train_epoch_end=False)


class SafetensorsCheckpoint(Checkpoint):
    """:class:`Checkpoint` that also writes the weights as ``<name>.safetensors`` beside each
    ``<name>.ckpt`` (and removes it with the checkpoint when top-k rotates it out).

    The safetensors file holds the deployable model only: the task's ``model`` (for
    :class:`~mmctx.trainers.DistillationTask` the student, not the teacher), keys relative
    to it, so ``load_weights(FusionModel(...), "best.safetensors")`` works and no pickled code
    is ever needed to read it. It is written atomically (temporary file, then
    ``os.replace``). Same arguments as ``ModelCheckpoint``; in YAML replace its class_path::

        - class_path: mmctx.trainers.SafetensorsCheckpoint
          init_args: {monitor: val/acc, mode: max, filename: best, save_last: true}
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            module = getattr(trainer.lightning_module, "model", trainer.lightning_module)
            save_safetensors(module, Path(filepath).with_suffix(".safetensors"))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            Path(filepath).with_suffix(".safetensors").unlink(missing_ok=True)


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load every weight of ``module`` from ``path``, which must match it exactly.

    ``path`` is a ``.safetensors`` file, a Lightning checkpoint (``state_dict``, the task's
    leading ``model.`` dropped) or a ``torch.save(state_dict)`` file, read with
    ``weights_only=True`` — no pickled code runs. It is
    :func:`~mmctx.trainers.base.load_submodules` applied to the whole module.

    Returns:
        ``module``, loaded.

    Raises:
        ValueError: the checkpoint is of another architecture; the message lists every
            missing, unexpected and mis-shaped key, and nothing is loaded.
    """
    try:
        load_submodules(module, path, [""])
    except ValueError as err:
        raise ValueError(
            str(err).replace("init_from:", "load_weights:", 1).replace(" the model's ['']", f" {type(module).__name__}", 1)
        ) from None
    return module
