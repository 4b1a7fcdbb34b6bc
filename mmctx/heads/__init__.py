"""Heads consume an extended context and return logits or samples (never a loss)."""

from mmctx.heads.classifier import ClassifierHead

__all__ = ["ClassifierHead"]
