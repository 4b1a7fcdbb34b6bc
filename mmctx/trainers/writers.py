"""Callbacks that write a task's outputs to files: predictions (JSONL), generated captions,
classification test outputs, GAN sample grids and generated files.

The tasks only produce rows and tensors (and keep them in an attribute until written); these
callbacks write them. Each task adds its default writer itself
(``LightningModule.configure_callbacks``), unless the trainer already has one of that type,
so configs need not list them; the file names and folders are the task's run folder
(:attr:`~mmctx.trainers.MMCtxTask.output_dir`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

__all__ = [
    "CaptionSampleWriter",
    "ClassificationTestWriter",
    "GANSampleWriter",
    "GeneratedSamples",
    "JsonlPredictionWriter",
    "SampleGrid",
    "TaskOutputWriter",
    "samples_table",
    "save_image_grid",
]


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes ``predict_step`` outputs (lists of dicts) as JSON lines, and says where.

    The classification, captioning and GAN tasks add one by default
    (``configure_callbacks``), so ``mmctx predict --ckpt_path ...`` writes
    ``predictions.jsonl`` beside the checkpoint's run (``runs/X/version_N/``) unless the
    trainer has a writer of this type already.

    Args:
        output_path: the JSONL file to write (parent folders are created); None:
            ``predictions.jsonl`` in the run folder of the checkpoint predicted with
            (the folder holding its ``checkpoints/``), else in the task's
            :attr:`~mmctx.trainers.MMCtxTask.output_dir`.
    """

    def __init__(self, output_path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_path = Path(output_path) if output_path is not None else None

    def resolve_path(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        """Where the predictions go (see ``output_path``)."""
        if self.output_path is not None:
            return self.output_path
        ckpt = getattr(trainer, "ckpt_path", None)
        if ckpt:
            folder = Path(ckpt).parent
            return (folder.parent if folder.name == "checkpoints" else folder) / "predictions.jsonl"
        out = getattr(pl_module, "output_dir", None)
        return Path(out if out is not None else trainer.default_root_dir) / "predictions.jsonl"

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:  # type: ignore[override]
        path = self.resolve_path(trainer, pl_module)
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


class TaskOutputWriter(L.Callback):
    """Base of the writers of a task's evaluation outputs: at the end of validation and of
    testing, writes what the task left pending (:meth:`flush`). Another callback that reads
    the files at the same moment (:class:`~mmctx.trainers.RunSummary`) calls :meth:`flush`
    first; a second call writes nothing."""

    def flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write (on rank zero) and drop the task's pending outputs."""
        raise NotImplementedError

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer, pl_module)


def _add_text(loggers: list, tag: str, text: str, step: int) -> None:
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            experiment.add_text(tag, text, step)


# ---------------------------------------------------------------------------- captioning


class CaptionSampleWriter(TaskOutputWriter):
    """Writes the captions a :class:`~mmctx.trainers.CaptioningTask` generated in validation
    and test (its ``caption_outputs``: ``{split: {"rows", "metrics", "step"}}``), into the run
    folder:

    - ``captions_val.jsonl`` / ``captions_test.jsonl``: one line per sample,
      ``{"id", "references", "generated"}``;
    - ``samples_val.txt`` / ``samples_test.txt``: a Markdown table of the first
      ``num_samples_to_log`` samples (the task's argument), also logged to TensorBoard as
      text (``val/samples``, ``test/samples``).
    """

    def flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending: dict[str, dict[str, Any]] = getattr(pl_module, "caption_outputs", {})
        for split in list(pending):
            result = pending.pop(split)
            if trainer.is_global_zero:
                self.write(pl_module.output_dir, split, result, pl_module.num_samples_to_log, trainer.loggers)

    @staticmethod
    def write(out: Path, split: str, result: dict[str, Any], num_samples: int, loggers: list = ()) -> None:
        """Write one split's ``{"rows", "metrics", "step"}`` into the folder ``out``."""
        rows, metrics, step = result["rows"], result["metrics"], result["step"]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"captions_{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        table = samples_table(rows[:num_samples])
        summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        header = f"{split} samples at step {step} ({len(rows)} captions; {summary})\n\n"
        (out / f"samples_{split}.txt").write_text(header + table + "\n")
        _add_text(loggers, f"{split}/samples", table, step)


def samples_table(rows: list[dict]) -> str:
    """A Markdown table (id | reference | generated) of caption rows, padded so that it also
    reads as plain text. Several references are joined with `` / ``."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    body = [(cell(r["id"]), cell(" / ".join(r["references"])), cell(r["generated"])) for r in rows]
    head = ("id", "reference", "generated")
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


# ---------------------------------------------------------------------------- classification


class ClassificationTestWriter(TaskOutputWriter):
    """Writes a :class:`~mmctx.trainers.ClassificationTask`'s test outputs (its
    ``test_outputs``: ``{"rows", "confusion"}``) into the run folder:
    ``test_predictions.jsonl`` (one line per sample: id, true and predicted class,
    probabilities) and ``confusion_matrix.txt`` (also logged to TensorBoard as text)."""

    def flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = getattr(pl_module, "test_outputs", None)
        if result is None:
            return
        pl_module.test_outputs = None
        if not trainer.is_global_zero:
            return
        out = pl_module.output_dir
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "test_predictions.jsonl", "w") as f:
            for row in result["rows"]:
                f.write(json.dumps(row) + "\n")
        classes = pl_module.classes
        width = max(6, *(len(c) for c in classes)) + 1  # at least one space between columns
        lines = ["rows: true class, columns: predicted class", " " * width + "".join(f"{c:>{width}}" for c in classes)]
        for c, row in zip(classes, result["confusion"].tolist()):
            lines.append(f"{c:>{width}}" + "".join(f"{v:>{width}}" for v in row))
        (out / "confusion_matrix.txt").write_text("\n".join(lines) + "\n")
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            experiment.add_text("test/confusion_matrix", "    " + "\n    ".join(lines), trainer.global_step)


# ---------------------------------------------------------------------------- GAN


@dataclass
class SampleGrid:
    """A GAN's fixed-noise sample grid.

    Shapes: pictures (n·k, C, H, W) in [0, 1], row ``i`` of the grid is condition ``i``.

    Attributes:
        pictures: the samples, condition-major (``k`` per condition).
        conditions: one line per condition (row).
        per_condition: ``k``, the samples (columns) per condition.
        name: the PNG's name in ``samples/`` (``step_000500``, ``final``).
        step: the global step.
    """

    pictures: Tensor
    conditions: list[str]
    per_condition: int
    name: str
    step: int


@dataclass
class GeneratedSamples:
    """One predict batch of a GAN: the files to write.

    Shapes: pictures (n, C, H, W) in [0, 1]; waves (n, S) or None.

    Attributes:
        pictures: one picture per file stem.
        waves: one waveform per file stem (spectrogram GANs), else None.
        stems: the file paths without suffix (``.png``, ``.wav`` are added).
        sample_rate: of ``waves``.
    """

    pictures: Tensor
    waves: Tensor | None
    stems: list[Path]
    sample_rate: int | None = None


class GANSampleWriter(L.Callback):
    """Writes a :class:`~mmctx.trainers.GANTask`'s samples into the run folder.

    - every ``sample_every_n_steps`` global steps (the task's argument) and at the end of
      fitting, the task's fixed-noise grid (:meth:`GANTask.sample_grid
      <mmctx.trainers.GANTask.sample_grid>`): ``samples/step_XXXXXX.png`` (``final.png``),
      ``samples_last.png``, ``samples_conditions.txt`` (the row conditions), and
      TensorBoard's Images tab (``samples``);
    - in ``predict``, each batch's generated files (the task's ``generated``):
      ``<id>_<k>.png``, plus ``<id>_<k>.wav`` for spectrograms.
    """

    def __init__(self) -> None:
        super().__init__()
        self._step_before = 0
        self._written = 0
        self._folder: Path | None = None
        self._audio = False

    # ------------------------------------------------------------------ grids

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        every = pl_module.sample_every_n_steps
        if every > 0 and trainer.global_step // every > self._step_before // every and trainer.is_global_zero:
            self.write_grid(trainer, pl_module, pl_module.sample_grid(batch))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            grid = pl_module.sample_grid(None, name="final")
            if grid is not None:
                self.write_grid(trainer, pl_module, grid)

    def write_grid(self, trainer: L.Trainer, pl_module: L.LightningModule, grid: SampleGrid) -> Path:
        """Write (and log to TensorBoard) ``grid``; returns the PNG's path."""
        out = pl_module.output_dir
        k = grid.per_condition
        path = save_image_grid(grid.pictures, out / "samples" / f"{grid.name}.png", nrow=k)
        save_image_grid(grid.pictures, out / "samples_last.png", nrow=k)
        rows = [f"row {i}: {line}" for i, line in enumerate(grid.conditions)]
        (out / "samples_conditions.txt").write_text(
            f"{len(grid.conditions)} conditions (rows) x {k} fixed noise vectors (columns)\n" + "\n".join(rows) + "\n"
        )
        from torchvision.utils import make_grid

        picture = make_grid(grid.pictures.float().cpu(), nrow=k, padding=2, pad_value=1.0)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_image"):
                experiment.add_image("samples", picture, grid.step)
                if grid.name == "final" or grid.step <= pl_module.sample_every_n_steps:
                    experiment.add_text("samples/conditions", "    " + "\n    ".join(rows), grid.step)
        return path

    # ------------------------------------------------------------------ predict

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._written = 0
        self._folder = None

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        samples: GeneratedSamples | None = getattr(pl_module, "generated", None)
        if samples is None:
            return
        pl_module.generated = None
        for i, stem in enumerate(samples.stems):
            save_image_grid(samples.pictures[i : i + 1], stem.with_suffix(".png"), 1, 0)
            if samples.waves is not None:
                import soundfile as sf

                sf.write(stem.with_suffix(".wav"), samples.waves[i].numpy(), samples.sample_rate)
        self._written += len(samples.stems)
        self._folder = samples.stems[0].parent if samples.stems else self._folder
        self._audio = samples.waves is not None

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._written:
            kinds = "PNG + WAV" if self._audio else "PNG"
            print(f"wrote {self._written} generated samples ({kinds}) to {self._folder}", flush=True)


def save_image_grid(pictures: Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> Path:
    """Save pictures in [0, 1] as one PNG grid (``nrow`` per row). Shapes: (B, C, H, W)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(pictures.float().cpu(), path, nrow=nrow, padding=padding, pad_value=1.0)
    return path
