"""What every mmctx LightningModule shares: optimizer/scheduler wiring and output folders."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn

__all__ = ["MMCtxTask"]


class MMCtxTask(L.LightningModule):
    """Base task: owns the model, builds the optimizer and scheduler passed in from YAML.

    Args:
        model: the plain ``nn.Module`` to train.
        optimizer: a callable ``params -> Optimizer`` (YAML: ``class_path: torch.optim.AdamW``).
        scheduler: a callable ``optimizer -> LRScheduler`` or None; stepped every optimizer
            step when it has ``set_total_steps`` (e.g. :class:`WarmupCosineLR`), else every
            epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(p for p in self.parameters() if p.requires_grad)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        per_step = hasattr(scheduler, "set_total_steps")
        if per_step:
            scheduler.set_total_steps(int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step" if per_step else "epoch"},
        }

    def save_config(self) -> None:
        """``save_hyperparameters()`` that keeps checkpoints loadable without pickled modules.

        Under LightningCLI the hyperparameters are the YAML config (class paths and init
        args), from which ``Task.load_from_checkpoint(path)`` rebuilds the injected modules.
        Built by hand in Python, injected ``nn.Module`` arguments and callables (optimizer
        and scheduler factories) cannot be stored as config: they are left out, so the
        checkpoint still loads with ``weights_only=True``, and must be passed again to
        ``load_from_checkpoint``.
        """
        frame = inspect.currentframe().f_back  # the subclass __init__ whose arguments to save
        if _given_hyperparameters.get() is not None:
            self.save_hyperparameters(frame=frame)
        else:
            plain = (bool, int, float, str, list, tuple, dict, type(None))
            objects = [k for k, v in frame.f_locals.items() if k != "self" and not isinstance(v, plain)]
            self.save_hyperparameters(ignore=objects, frame=frame)

    @property
    def output_dir(self) -> Path:
        """Where sample outputs go: the logger's run folder (beside TensorBoard's events)."""
        trainer = self.trainer
        if trainer.logger is not None and trainer.logger.log_dir is not None:
            return Path(trainer.logger.log_dir)
        return Path(trainer.default_root_dir)
