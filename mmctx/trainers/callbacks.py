"""Callbacks that tell a person what happened and where to look, and pruning during training
(the writers of output files are in :mod:`mmctx.trainers.writers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, ModelPruning
from torch import nn

from mmctx.deploy.compress import PRUNABLE, SparsitySchedule
from mmctx.trainers.writers import TaskOutputWriter

__all__ = ["RunSummary", "LayerPruning", "EMAWeights"]


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


class RunSummary(L.Callback):
    """Prints, at the end of fit and test, the metrics and where logs, checkpoints and
    sample outputs are; after a captioning test, also the first generated captions.

    Args:
        num_samples_shown: generated captions printed after a test (0: none).
    """

    def __init__(self, num_samples_shown: int = 8) -> None:
        self.num_samples_shown = num_samples_shown

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        lines = ["", "=== mmctx fit finished ==="]
        ckpt = trainer.checkpoint_callback
        if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path:
            score = f" ({ckpt.monitor}={_fmt(ckpt.best_model_score)})" if ckpt.monitor else ""
            lines.append(f"{'best' if ckpt.monitor else 'latest'} checkpoint : {ckpt.best_model_path}{score}")
            if ckpt.last_model_path:
                lines.append(f"last checkpoint : {ckpt.last_model_path}")
        if trainer.logger is not None and trainer.logger.log_dir:
            lines.append(f"logs (TensorBoard): {trainer.logger.log_dir}   (tensorboard --logdir {trainer.logger.save_dir})")
        lines.append(f"epochs {trainer.current_epoch}, optimizer steps {trainer.global_step}")
        print("\n".join(lines), flush=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for callback in trainer.callbacks:  # the files listed below are written first
            if isinstance(callback, TaskOutputWriter):
                callback.flush(trainer, pl_module)
        if not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        lines = ["", "=== mmctx test results ==="]
        width = max((len(k) for k in metrics), default=0) + 2
        lines += [f"{k:<{width}}{_fmt(v)}" for k, v in sorted(metrics.items())]
        if trainer.ckpt_path:
            lines.append(f"checkpoint      : {trainer.ckpt_path}")
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None
        if log_dir:
            lines.append(f"logs (TensorBoard): {log_dir}")
            outputs = sorted(p.name for p in Path(log_dir).glob("*") if p.suffix in {".jsonl", ".txt", ".json", ".png"})
            if outputs:
                lines.append(f"sample outputs  : {', '.join(str(Path(log_dir) / o) for o in outputs)}")
            samples = Path(log_dir) / "samples_test.txt"  # generated captions (CaptioningTask)
            if samples.is_file():
                lines += ["", *samples.read_text().splitlines()[: 2 + self.num_samples_shown + 2]]
        print("\n".join(lines), flush=True)


class LayerPruning(ModelPruning):
    """Lightning's ``ModelPruning``, restricted to the weights of Linear and Conv layers,
    with a sparsity schedule that can be written in YAML.

    Plain ``ModelPruning`` prunes every parameter called ``weight`` or ``bias``, LayerNorm, BatchNorm and
    embedding tables included; here only ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` weights
    (:data:`mmctx.deploy.PRUNABLE`) are pruned, and a frozen distillation teacher (a
    ``teacher`` attribute of the task) never is. At the end of training the pruning is made
    permanent (``make_pruning_permanent``), so checkpoints have the unpruned model's keys.

    YAML (``configs/prune.yaml``)::

        - class_path: mmctx.trainers.LayerPruning
          init_args:
            amount: {class_path: mmctx.deploy.SparsitySchedule,
                     init_args: {final_sparsity: 0.5, start_epoch: 1, end_epoch: 6}}

    Args:
        amount: fraction of the still-unpruned weights to prune at the end of each epoch,
            or a :class:`~mmctx.deploy.SparsitySchedule` (``epoch -> fraction``).
        pruning_fn: a ``torch.nn.utils.prune`` method name (``l1_unstructured``,
            ``random_unstructured``, ``ln_structured``, ...).
        use_global_unstructured: rank all pruned weights together (global sparsity).
        use_lottery_ticket_hypothesis: reset the surviving weights to their initial values
            after each pruning (off: prune a trained model and keep fine-tuning it).
        make_pruning_permanent: ``prune.remove`` at the end of training and in checkpoints.
        verbose: 1 logs the overall sparsity, 2 per layer.
        parameter_names: parameters of those layers to prune (ModelPruning's default also
            prunes biases).
    """

    def __init__(
        self,
        amount: float | SparsitySchedule = 0.5,
        pruning_fn: str = "l1_unstructured",
        use_global_unstructured: bool = True,
        use_lottery_ticket_hypothesis: bool = False,
        make_pruning_permanent: bool = True,
        verbose: int = 0,
        parameter_names: list[str] = ["weight"],  # noqa: B006 - never mutated
    ) -> None:
        super().__init__(
            pruning_fn=pruning_fn,
            parameter_names=list(parameter_names),
            amount=amount,
            use_global_unstructured=use_global_unstructured,
            use_lottery_ticket_hypothesis=use_lottery_ticket_hypothesis,
            make_pruning_permanent=make_pruning_permanent,
            verbose=verbose,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        teacher = getattr(pl_module, "teacher", None)
        self._skip = {id(m) for m in teacher.modules()} if isinstance(teacher, nn.Module) else set()
        super().setup(trainer, pl_module, stage)

    def filter_parameters_to_prune(self, parameters_to_prune=()):  # type: ignore[override]
        skip = getattr(self, "_skip", set())
        return [(m, n) for m, n in parameters_to_prune if isinstance(m, PRUNABLE) and id(m) not in skip]


class EMAWeights(EMAWeightAveraging):
    """An exponential moving average of the weights (Lightning's ``EMAWeightAveraging``):
    validation, the checkpoints' ``state_dict`` and the model after ``fit`` use the average.

    The average of the last few hundred steps is a flatter, less noisy point than the last
    step's weights; on the default task it narrows the spread of results across seeds and
    thread counts (docs/results.md). The checkpoints keep the raw weights too
    (``current_model_state``), so ``fit --ckpt_path last`` resumes exactly.

    Unlike Lightning's callback, loading a checkpoint for ``test`` / ``predict`` / ``validate``
    (where no average is kept) is silent: the checkpoint's ``state_dict`` already *is* the
    averaged model.

    Args:
        decay: weight of the old average per update (0.995: about the last 200 steps).
        update_every_n_steps: update the average every n optimizer steps.
        update_starting_at_step: first step that updates the average (None: the first).
    """

    def __init__(self, decay: float = 0.995, update_every_n_steps: int = 1, update_starting_at_step: int | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMAWeights: decay must be in (0, 1), got {decay}")
        super().__init__(decay=decay, update_every_n_steps=update_every_n_steps, update_starting_at_step=update_starting_at_step)
        self.decay = decay

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:  # test / predict / validate: the state_dict is the average
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
