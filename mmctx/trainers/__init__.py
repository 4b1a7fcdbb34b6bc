"""LightningModules (tasks) and callbacks. The only package, with data modules and the CLI,
that imports Lightning.

- tasks: ``base.py`` (:class:`MMCtxTask`), ``classification.py``, ``distillation.py``,
  ``captioning.py``, ``gan.py``, ``pretraining.py``;
- checkpoint I/O, the one weight-loading path and fine-tuning from a checkpoint:
  ``checkpoints.py``;
- callbacks: ``writers.py`` (output files), ``guards.py`` (non-finite losses),
  ``callbacks.py`` (run summary, pruning);
- helpers: ``schedules.py`` (learning rate), ``seeding.py`` (reproducible epochs),
  ``distributed.py`` (gathering rows under DDP).
"""

from mmctx.trainers.base import MMCtxTask
from mmctx.trainers.callbacks import EMAWeights, LayerPruning, RunSummary
from mmctx.trainers.captioning import CaptioningTask
from mmctx.trainers.checkpoints import (
    MOVED_CLASS_PATHS,
    AtomicCheckpointIO,
    Checkpoint,
    InitFromCheckpoint,
    SafetensorsCheckpoint,
    load_state,
    load_weights,
)
from mmctx.trainers.classification import ClassificationTask
from mmctx.trainers.distillation import DistillationTask
from mmctx.trainers.gan import GANTask
from mmctx.trainers.guards import NonFiniteGuard, NonFiniteLossError
from mmctx.trainers.pretraining import PretrainingTask
from mmctx.trainers.schedules import WarmupCosineLR
from mmctx.trainers.writers import CaptionSampleWriter, ClassificationTestWriter, GANSampleWriter, JsonlPredictionWriter

__all__ = [
    "MMCtxTask",
    "ClassificationTask",
    "DistillationTask",
    "CaptioningTask",
    "GANTask",
    "PretrainingTask",
    "InitFromCheckpoint",
    "RunSummary",
    "EMAWeights",
    "JsonlPredictionWriter",
    "CaptionSampleWriter",
    "ClassificationTestWriter",
    "GANSampleWriter",
    "LayerPruning",
    "AtomicCheckpointIO",
    "Checkpoint",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "SafetensorsCheckpoint",
    "MOVED_CLASS_PATHS",
    "load_state",
    "load_weights",
    "WarmupCosineLR",
]
