"""Knowledge distillation: a small student classifier learns from a frozen teacher."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from mmctx.deploy.compress import distillation_loss
from mmctx.trainers.checkpoints import load_weights, read_checkpoint
from mmctx.trainers.classification import ClassificationTask
from mmctx.types import MultimodalBatch

__all__ = ["DistillationTask"]


class DistillationTask(ClassificationTask):
    """Trains ``model`` (the student) on ``alpha * T^2 * KL(teacher^T || student^T) + (1 -
    alpha) * CE`` (:func:`mmctx.deploy.distillation_loss`) against a frozen teacher.

    The teacher comes from ``teacher_checkpoint``:

    * a checkpoint written by ``mmctx fit`` (e.g. of ``configs/default.yaml``) rebuilds its
      own model from the config saved in it (``ClassificationTask.load_from_checkpoint``),
      so only the path is needed (its weights are checked like every load, see
      :func:`~mmctx.trainers.checkpoints.load_state`);
    * otherwise give the teacher's architecture as ``teacher`` (a module, or a nested
      ``class_path`` in YAML) and its weights are loaded with
      :func:`~mmctx.trainers.load_weights` (``.ckpt``, state dict or ``.safetensors``, read
      with ``weights_only``; a checkpoint of another architecture is an error listing the
      mismatched keys).

    The teacher gets no gradients, is left out of the optimizer, and stays in eval mode
    (dropout off, BatchNorm statistics fixed). It is kept in this task's checkpoints (so
    they reload strictly); the deployable student alone is ``task.model``, and
    :class:`~mmctx.trainers.SafetensorsCheckpoint` writes only it. Validation and test
    report the student's plain cross-entropy and accuracy, comparable with the teacher's.
    Logs ``train/kd`` and ``train/ce`` besides ``train/loss``, and exposes them as
    ``loss_terms`` for :class:`~mmctx.trainers.NonFiniteGuard`.

    Args:
        model: the student, ``batch -> logits (B, K)``.
        teacher_checkpoint: path of the teacher's weights.
        teacher: the teacher's architecture (weights from ``teacher_checkpoint``); None to
            rebuild it from a checkpoint written through the CLI.
        temperature: T, softens both distributions (> 0).
        alpha: weight of the distillation term, in [0, 1] (0: plain cross-entropy).
        num_classes, classes, optimizer, scheduler, label_smoothing, target, compile: as
            :class:`~mmctx.trainers.ClassificationTask`.
    """

    def __init__(
        self,
        model: nn.Module,
        teacher_checkpoint: str,
        teacher: nn.Module | None = None,
        temperature: float = 4.0,
        alpha: float = 0.7,
        num_classes: int | None = None,
        classes: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        target: str = "label",
        compile: bool = False,
    ) -> None:
        super().__init__(model, num_classes, classes, optimizer, scheduler, label_smoothing, target, compile)
        self.save_config()  # again, from this frame: the distillation arguments too
        if temperature <= 0:
            raise ValueError(f"DistillationTask: temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"DistillationTask: alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha
        self.teacher = self._load_teacher(teacher_checkpoint, teacher)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.loss_terms: dict[str, Tensor] = {}

    def _load_teacher(self, path: str, teacher: nn.Module | None) -> nn.Module:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"DistillationTask: teacher_checkpoint {path!r} not found; train the teacher first "
                "(e.g. `mmctx fit --config configs/default.yaml`) and pass its best.ckpt"
            )
        if teacher is not None:
            return load_weights(teacher, path)
        blob = read_checkpoint(path, "DistillationTask")
        saved = blob.get("hyper_parameters", {}) if isinstance(blob, dict) else {}
        if not isinstance(saved.get("model"), dict) or "class_path" not in saved["model"]:
            raise ValueError(
                f"DistillationTask: {path} does not record its model's config (it was not trained "
                "through `mmctx fit`); pass the teacher's architecture as `teacher`"
            )
        if saved.get("classes") is not None and list(saved["classes"]) != self.classes:
            raise ValueError(
                f"DistillationTask: the teacher's classes {saved['classes']} differ from the student's {self.classes}"
            )
        return ClassificationTask.load_from_checkpoint(path, map_location="cpu").model

    def train(self, mode: bool = True) -> DistillationTask:
        """Set training mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> Tensor:
        labels = self._labels(batch)
        logits = self(batch)  # (B, K)
        with torch.no_grad():
            teacher_logits = self.teacher(batch)  # (B, K)
        loss, self.loss_terms = distillation_loss(
            logits, teacher_logits, labels, self.temperature, self.alpha, self.label_smoothing
        )
        self.train_acc(logits, labels)
        n = len(labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v.detach() for k, v in self.loss_terms.items()}, batch_size=n)
        self.log("train/acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
        return loss
