"""LightningModules (tasks) and callbacks. The only package, with data modules and the CLI,
that imports Lightning."""

from mmctx.trainers.base import InitFromCheckpoint, MMCtxTask
from mmctx.trainers.callbacks import JsonlPredictionWriter, LayerPruning, RunSummary
from mmctx.trainers.captioning import CaptioningTask
from mmctx.trainers.classification import ClassificationTask
from mmctx.trainers.distillation import DistillationTask
from mmctx.trainers.gan import GANTask
from mmctx.trainers.guards import AtomicCheckpointIO, Checkpoint, NonFiniteGuard, NonFiniteLossError, SafetensorsCheckpoint, load_weights
from mmctx.trainers.pretraining import PretrainingTask
from mmctx.trainers.schedules import WarmupCosineLR

__all__ = [
    "MMCtxTask",
    "ClassificationTask",
    "DistillationTask",
    "CaptioningTask",
    "GANTask",
    "PretrainingTask",
    "InitFromCheckpoint",
    "RunSummary",
    "JsonlPredictionWriter",
    "LayerPruning",
    "AtomicCheckpointIO",
    "Checkpoint",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "SafetensorsCheckpoint",
    "load_weights",
    "WarmupCosineLR",
]
