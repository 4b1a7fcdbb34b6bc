"""Knowledge distillation: a small student classifier learns from a frozen teacher."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from mmctx.losses.distillation import distillation_loss, feature_distillation_loss
from mmctx.trainers.checkpoints import load_weights, read_checkpoint
from mmctx.trainers.classification import ClassificationTask
from mmctx.types import MultimodalBatch

__all__ = ["DistillationTask"]


class DistillationTask(ClassificationTask):
    """Trains ``model`` (the student) on ``alpha * T^2 * KL(teacher^T || student^T) + (1 -
    alpha) * CE`` (:func:`mmctx.losses.distillation_loss`) against a frozen teacher, plus
    ``feature_weight`` times a feature-matching term (:func:`mmctx.losses.feature_distillation_loss`)
    on the ``features`` named.

    Features (both models must then be :class:`~mmctx.models.FusionModel`-like: ``encoders``,
    ``encode_modalities``, ``fuse``, ``head``): a modality name matches that encoder's tokens
    (the same grid on both sides: e.g. both image encoders at the same stride), ``"context"``
    the fused context (the same number of tokens), ``"pooled"`` the head's pooled vector. Each
    gets a trainable linear projection from the student's width to the teacher's (trained
    with the student, left out of :attr:`model` and of the safetensors weights). Matching the
    image encoder's grid gives the small image backbone a dense target per cell rather than
    one soft label per picture.

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
        feature_weight: weight of the feature-matching term (0: off).
        features: what to match when ``feature_weight > 0``: modality names, ``"context"``,
            ``"pooled"``.
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
        feature_weight: float = 0.0,
        features: list[str] | None = None,
        num_classes: int | None = None,
        classes: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        target: str = "label",
        compile: bool | str | list[str] = False,
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
        if feature_weight < 0:
            raise ValueError(f"DistillationTask: feature_weight must be >= 0, got {feature_weight}")
        self.feature_weight = feature_weight
        self.features = list(features or []) if feature_weight > 0 else []
        if feature_weight > 0 and not self.features:
            raise ValueError("DistillationTask: feature_weight > 0 needs features, e.g. [image] or [pooled]")
        #: projections student width → teacher width, one per matched feature
        self.projections = nn.ModuleDict(
            {name: nn.Linear(*self._feature_dims(name)) for name in self.features}
        )

    def _feature_dims(self, name: str) -> tuple[int, int]:
        """(student width, teacher width) of a matched feature; fails naming what is missing."""
        for role, m in (("student", self.model), ("teacher", self.teacher)):
            missing = [a for a in ("encoders", "encode_modalities", "fuse", "head") if not hasattr(m, a)]
            if missing:
                raise ValueError(f"DistillationTask: features={self.features} need FusionModel-like models; "
                                 f"the {role} ({type(m).__name__}) has no {missing}")
        dims = []
        for role, m in (("student", self.model), ("teacher", self.teacher)):
            if name in ("context", "pooled"):
                dim = getattr(m.head, "dim", None)
            elif name in m.encoders:
                dim = getattr(m.encoders[name], "out_dim", None)
            else:
                raise ValueError(f"DistillationTask: feature {name!r} is not 'context', 'pooled' or a modality "
                                 f"of the {role} ({list(m.encoders)})")
            if not isinstance(dim, int):
                raise ValueError(f"DistillationTask: cannot tell the {role}'s width of feature {name!r}")
            dims.append(dim)
        return dims[0], dims[1]

    def _features(self, model: nn.Module, batch: MultimodalBatch) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor | None]]]:
        """Logits and the named features ``(x, mask)`` of a FusionModel-like model."""
        tokens = model.encode_modalities(batch.inputs)
        context = model.fuse(tokens)
        out: dict[str, tuple[Tensor, Tensor | None]] = {}
        for name in self.features:
            if name == "context":
                out[name] = (context.x, context.mask)  # (B, N, D)
            elif name == "pooled":
                out[name] = (model.head.pool(context), None)  # (B, D)
            else:
                out[name] = (tokens[name].x, tokens[name].mask)  # (B, N_m, D_m)
        return model.head(context), out

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
        if not self.features:
            logits = self(batch)  # (B, K)
            with torch.no_grad():
                teacher_logits = self.teacher(batch)  # (B, K)
        else:
            logits, feats = self._features(self.model, batch)
            with torch.no_grad():
                teacher_logits, teacher_feats = self._features(self.teacher, batch)
        loss, self.loss_terms = distillation_loss(
            logits, teacher_logits, labels, self.temperature, self.alpha, self.label_smoothing
        )
        if self.features:
            for name in self.features:
                (s, mask), (t, _) = feats[name], teacher_feats[name]
                term = feature_distillation_loss(self.projections[name](s), t, mask)
                self.loss_terms[f"feat_{name}"] = term
                loss = loss + self.feature_weight * term
        self.train_acc(logits, labels)
        n = len(labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v.detach() for k, v in self.loss_terms.items()}, batch_size=n)
        self.log("train/acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
        return loss
