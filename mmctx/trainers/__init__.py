"""LightningModules (tasks) and callbacks. The only package, with data modules and the CLI,
that imports Lightning."""

from mmctx.trainers.base import MMCtxTask
from mmctx.trainers.callbacks import JsonlPredictionWriter, RunSummary
from mmctx.trainers.captioning import CaptioningTask
from mmctx.trainers.classification import ClassificationTask
from mmctx.trainers.schedules import WarmupCosineLR

__all__ = [
    "MMCtxTask",
    "ClassificationTask",
    "CaptioningTask",
    "RunSummary",
    "JsonlPredictionWriter",
    "WarmupCosineLR",
]
