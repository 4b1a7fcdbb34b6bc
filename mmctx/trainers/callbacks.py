"""Callbacks that tell a person what happened and where to look."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint

__all__ = ["RunSummary", "JsonlPredictionWriter"]


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


class RunSummary(L.Callback):
    """Prints, at the end of fit and test, the metrics and where logs, checkpoints and
    sample outputs are."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        lines = ["", "=== mmctx fit finished ==="]
        ckpt = trainer.checkpoint_callback
        if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path:
            lines.append(f"best checkpoint : {ckpt.best_model_path} ({ckpt.monitor}={_fmt(ckpt.best_model_score)})")
            if ckpt.last_model_path:
                lines.append(f"last checkpoint : {ckpt.last_model_path}")
        if trainer.logger is not None and trainer.logger.log_dir:
            lines.append(f"logs (TensorBoard): {trainer.logger.log_dir}   (tensorboard --logdir {trainer.logger.save_dir})")
        lines.append(f"epochs {trainer.current_epoch}, optimizer steps {trainer.global_step}")
        print("\n".join(lines), flush=True)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        lines = ["", "=== mmctx test results ==="]
        lines += [f"{k:<16}{_fmt(v)}" for k, v in sorted(metrics.items())]
        if trainer.ckpt_path:
            lines.append(f"checkpoint      : {trainer.ckpt_path}")
        log_dir = trainer.logger.log_dir if trainer.logger is not None else None
        if log_dir:
            lines.append(f"logs (TensorBoard): {log_dir}")
            outputs = sorted(p.name for p in Path(log_dir).glob("*") if p.suffix in {".jsonl", ".txt", ".json", ".png"})
            if outputs:
                lines.append(f"sample outputs  : {', '.join(str(Path(log_dir) / o) for o in outputs)}")
        print("\n".join(lines), flush=True)


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes ``predict_step`` outputs (lists of dicts) as JSON lines.

    Args:
        output_path: the JSONL file to write (parent folders are created).
    """

    def __init__(self, output_path: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="epoch")
        self.output_path = Path(output_path)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:  # type: ignore[override]
        path = self.output_path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with open(path, "w") as f:
            for batch_out in predictions:
                for row in batch_out:
                    f.write(json.dumps(row) + "\n")
                    count += 1
        print(f"wrote {count} predictions to {path}", flush=True)
