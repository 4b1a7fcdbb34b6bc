"""Multimodal classification task."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from mmctx.trainers.base import MMCtxTask
from mmctx.trainers.writers import ClassificationTestWriter, JsonlPredictionWriter
from mmctx.types import MultimodalBatch

__all__ = ["ClassificationTask"]


class ClassificationTask(MMCtxTask):
    """Cross-entropy training of a model that maps a batch to class logits.

    Logs ``{train,val,test}/loss``, ``/acc`` (micro accuracy) and ``/f1`` (macro F1). At the
    end of testing it keeps the rows and the confusion matrix in :attr:`test_outputs`, which
    :class:`~mmctx.trainers.ClassificationTestWriter` (added by :meth:`configure_callbacks`
    unless the trainer has one) writes as ``test_predictions.jsonl`` (one line per sample:
    id, true and predicted class, probabilities) and ``confusion_matrix.txt`` into the run
    folder.

    Args:
        model: ``batch -> logits (B, K)``, e.g. :class:`~mmctx.models.FusionModel`.
        num_classes: K; left unset in configs (the CLI fills it from the data module).
        classes: class names, for readable outputs; filled from the data module.
        optimizer: optimizer factory.
        scheduler: learning-rate scheduler factory or None.
        label_smoothing: cross-entropy label smoothing.
        target: key of the labels in ``batch.targets``.
        frame_loss_weight: weight of a frame-level detection loss in training (0: none):
            :meth:`~mmctx.context.StreamingMemoryEncoder.frame_loss` of every
            ``StreamingMemoryEncoder`` in the model, with the event spans of
            ``batch.targets[frame_target]`` (e.g. the spoken task's key word); logged as
            ``train/frame_loss``.
        frame_target: key of the (B, 2) [start, stop) spans in ``batch.targets``.
        compile: compile the model's forward with ``torch.compile``; see
            :class:`~mmctx.trainers.MMCtxTask`.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int | None = None,
        classes: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        target: str = "label",
        frame_loss_weight: float = 0.0,
        frame_target: str = "key_span",
        compile: bool | str | list[str] = False,
    ) -> None:
        super().__init__(model, optimizer, scheduler, compile)
        if num_classes is None or num_classes < 2:
            raise ValueError(f"ClassificationTask: num_classes must be >= 2, got {num_classes!r}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"ClassificationTask: {len(classes)} class names for num_classes={num_classes}")
        self.save_config()
        self.num_classes = num_classes
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.label_smoothing = label_smoothing
        self.target = target
        if frame_loss_weight < 0:
            raise ValueError(f"ClassificationTask: frame_loss_weight must be >= 0, got {frame_loss_weight}")
        self.frame_loss_weight = frame_loss_weight
        self.frame_target = frame_target
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self._test_rows: list[dict] = []
        #: the last test's ``{"rows", "confusion"}`` until written
        self.test_outputs: dict[str, Any] | None = None

    def configure_callbacks(self) -> list:
        """The default writer of the test outputs, unless the trainer already has one."""
        return self.default_callbacks(ClassificationTestWriter, JsonlPredictionWriter)

    def forward(self, batch: MultimodalBatch) -> Tensor:
        return self.model(batch)

    def _labels(self, batch: MultimodalBatch) -> Tensor:
        if self.target not in batch.targets:
            raise KeyError(
                f"ClassificationTask: batch has no target {self.target!r} (targets: {list(batch.targets)})"
            )
        return batch.targets[self.target]

    def _step(self, batch: MultimodalBatch) -> tuple[Tensor, Tensor, Tensor]:
        labels = self._labels(batch)
        logits = self(batch)  # (B, K)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, logits, labels

    def _frame_loss(self, batch: MultimodalBatch, labels: Tensor) -> Tensor:
        """The frame-level loss of every StreamingMemoryEncoder (after the forward of ``batch``)."""
        from mmctx.context import StreamingMemoryEncoder

        if self.frame_target not in batch.targets:
            raise KeyError(
                f"ClassificationTask: frame_loss_weight > 0 needs target {self.frame_target!r} "
                f"(targets: {list(batch.targets)})"
            )
        encoders = [m for m in self.model.modules() if isinstance(m, StreamingMemoryEncoder)]
        if not encoders:
            raise ValueError("ClassificationTask: frame_loss_weight > 0 but the model has no StreamingMemoryEncoder")
        spans = batch.targets[self.frame_target]
        return sum(e.frame_loss(spans, labels, self.num_classes) for e in encoders) / len(encoders)

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> Tensor:
        loss, logits, labels = self._step(batch)
        if self.frame_loss_weight > 0:
            frame = self._frame_loss(batch, labels)
            self.log("train/frame_loss", frame, batch_size=len(labels))
            self.log("train/class_loss", loss, batch_size=len(labels))
            loss = loss + self.frame_loss_weight * frame
        self.train_acc(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_metrics.update(logits, labels)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(labels), sync_dist=True)
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=len(labels))

    def test_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.test_metrics.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.log("test/loss", loss, batch_size=len(labels), sync_dist=True)
        self.log_dict(self.test_metrics, batch_size=len(labels))
        self._test_rows.extend(self._rows(batch, logits, labels))

    def predict_step(self, batch: MultimodalBatch, batch_idx: int) -> list[dict]:
        logits = self(batch)
        labels = batch.targets.get(self.target)
        return self._rows(batch, logits, labels)

    def _rows(self, batch: MultimodalBatch, logits: Tensor, labels: Tensor | None) -> list[dict]:
        probs = logits.float().softmax(-1).cpu()
        pred = probs.argmax(-1)
        rows = []
        for i in range(len(pred)):
            row = {
                "id": batch.ids[i] if i < len(batch.ids) else str(i),
                "predicted": self.classes[int(pred[i])],
                "probs": {c: round(float(p), 4) for c, p in zip(self.classes, probs[i])},
            }
            if labels is not None:
                row["label"] = self.classes[int(labels[i])]
            rows.append(row)
        return rows

    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        self.test_outputs = {"rows": self._test_rows, "confusion": confusion}
