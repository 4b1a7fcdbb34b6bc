"""The writer callbacks write the files the tasks used to write themselves (same names,
folders and contents); tasks add their default writer unless the trainer has one; RunSummary
sees the files of a test it summarises."""

from __future__ import annotations

import json
from types import SimpleNamespace

import lightning as L
import torch

from mmctx.encoders import TextTransformerEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.trainers import (
    CaptionSampleWriter,
    ClassificationTask,
    ClassificationTestWriter,
    GANSampleWriter,
    JsonlPredictionWriter,
    RunSummary,
)
from mmctx.trainers.writers import GeneratedSamples, SampleGrid

ROWS = [
    {"id": "val-0", "references": ["a dog", "a brown dog"], "generated": "a dog"},
    {"id": "val-1", "references": ["a red | bus"], "generated": "a bus"},
    {"id": "val-2", "references": ["a cat"], "generated": "a cat"},
]


def fake(tmp_path, **module):
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], logger=None, global_step=7, callbacks=[],
                              callback_metrics={"test/bleu4": torch.tensor(0.5)}, ckpt_path=None)
    pl_module = SimpleNamespace(output_dir=tmp_path, **module)
    return trainer, pl_module


def test_caption_writer_writes_the_jsonl_and_the_samples_table_once(tmp_path):
    outputs = {"val": {"rows": ROWS, "metrics": {"bleu4": 0.25, "cider": 1.5}, "step": 12}}
    trainer, task = fake(tmp_path, caption_outputs=outputs, num_samples_to_log=2)
    CaptionSampleWriter().on_validation_end(trainer, task)
    assert [json.loads(line) for line in (tmp_path / "captions_val.jsonl").read_text().splitlines()] == ROWS
    assert (tmp_path / "samples_val.txt").read_text() == (
        "val samples at step 12 (3 captions; bleu4 0.250, cider 1.500)\n\n"
        "| id    | reference           | generated |\n"
        "|-------|---------------------|-----------|\n"
        "| val-0 | a dog / a brown dog | a dog     |\n"
        "| val-1 | a red \\| bus        | a bus     |\n"
    )
    assert task.caption_outputs == {}  # written once, then dropped
    (tmp_path / "samples_val.txt").unlink()
    CaptionSampleWriter().on_test_end(trainer, task)
    assert not (tmp_path / "samples_val.txt").exists()


def test_other_ranks_write_nothing_but_drop_their_outputs(tmp_path):
    trainer, task = fake(tmp_path, caption_outputs={"test": {"rows": ROWS, "metrics": {}, "step": 1}},
                         num_samples_to_log=8, test_outputs={"rows": [], "confusion": torch.zeros(2, 2)})
    trainer.is_global_zero = False
    CaptionSampleWriter().flush(trainer, task)
    ClassificationTestWriter().flush(trainer, task)
    assert list(tmp_path.iterdir()) == [] and task.caption_outputs == {} and task.test_outputs is None


def test_classification_writer_writes_predictions_and_the_confusion_matrix(tmp_path):
    rows = [{"id": "test-0", "predicted": "cat", "probs": {"cat": 0.9, "dog": 0.1}, "label": "cat"}]
    confusion = torch.tensor([[3, 1], [0, 12]])
    trainer, task = fake(tmp_path, classes=["cat", "dog"], test_outputs={"rows": rows, "confusion": confusion})
    ClassificationTestWriter().on_test_end(trainer, task)
    assert [json.loads(line) for line in (tmp_path / "test_predictions.jsonl").read_text().splitlines()] == rows
    assert (tmp_path / "confusion_matrix.txt").read_text() == (
        "rows: true class, columns: predicted class\n"
        "           cat    dog\n"
        "    cat      3      1\n"
        "    dog      0     12\n"
    )
    assert task.test_outputs is None


def test_gan_writer_writes_the_grid_its_conditions_and_predicted_files(tmp_path):
    trainer, task = fake(tmp_path, sample_every_n_steps=2)
    grid = SampleGrid(torch.rand(6, 3, 8, 8), ["c0 'a dog'", "c1", "c2"], 2, "step_000004", 4)
    writer = GANSampleWriter()
    path = writer.write_grid(trainer, task, grid)
    assert path == tmp_path / "samples" / "step_000004.png" and (tmp_path / "samples_last.png").is_file()
    assert (tmp_path / "samples_conditions.txt").read_text() == (
        "3 conditions (rows) x 2 fixed noise vectors (columns)\nrow 0: c0 'a dog'\nrow 1: c1\nrow 2: c2\n"
    )
    stems = [tmp_path / "gen" / f"test-0_{j}" for j in range(2)]
    task.generated = GeneratedSamples(torch.rand(2, 1, 8, 8), torch.zeros(2, 800), stems, 16000)
    writer.on_predict_start(trainer, task)
    writer.on_predict_batch_end(trainer, task, [], None, 0)
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == [
        "test-0_0.png", "test-0_0.wav", "test-0_1.png", "test-0_1.wav"]
    assert task.generated is None


def test_a_task_adds_its_default_writer_unless_the_trainer_has_one(tmp_path):
    model = FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=8, num_layers=1, num_heads=2)},
                        ConcatFusion({"text": 8}, 8), ClassifierHead(8, num_classes=3))
    task = ClassificationTask(model, num_classes=3)
    assert [type(c) for c in task.configure_callbacks()] == [ClassificationTestWriter, JsonlPredictionWriter]
    mine = ClassificationTestWriter()
    trainer = L.Trainer(callbacks=[mine], logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    task.trainer = trainer
    # Lightning would otherwise replace the user's writer
    assert [type(c) for c in task.configure_callbacks()] == [JsonlPredictionWriter]


def test_run_summary_prints_the_samples_of_the_test_it_summarises(tmp_path, capsys):
    outputs = {"test": {"rows": ROWS, "metrics": {"bleu4": 0.25}, "step": 3}}
    trainer, task = fake(tmp_path, caption_outputs=outputs, num_samples_to_log=8)
    trainer.logger = SimpleNamespace(log_dir=str(tmp_path))
    # the task's writer comes after RunSummary in trainer.callbacks (configure_callbacks appends)
    trainer.callbacks = [RunSummary(num_samples_shown=2), CaptionSampleWriter()]
    trainer.callbacks[0].on_test_end(trainer, task)
    printed = capsys.readouterr().out
    assert "=== mmctx test results ===" in printed and "samples_test.txt" in printed
    assert "test samples at step 3 (3 captions; bleu4 0.250)" in printed and "| val-1 |" in printed
