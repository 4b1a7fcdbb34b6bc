"""ClassificationTask: it learns on the default data, wires optimizer/scheduler from the
config, and writes readable outputs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from mmctx.data import DefaultDataModule, generate_default_dataset
from mmctx.encoders import RNNAudioEncoder, TimmImageEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.trainers import ClassificationTask, WarmupCosineLR


def tiny_model(num_classes: int = 4) -> FusionModel:
    return FusionModel(
        encoders={
            "image": TimmImageEncoder("resnet10t", out_dim=32, stage=3),
            "audio": RNNAudioEncoder(n_mels=32, conv_channels=8, hidden_dim=32, num_layers=1, out_dim=32),
        },
        fusion=ConcatFusion({"image": 32, "audio": 32}, 32),
        head=ClassifierHead(32, num_classes=num_classes, hidden_dim=32),
    )


@pytest.fixture(scope="module")
def learning_root(tmp_path_factory) -> Path:
    return generate_default_dataset(tmp_path_factory.mktemp("learn") / "data", num_train=480, num_val=160, num_test=10, seed=1)


@pytest.mark.slow
def test_tiny_model_beats_chance_on_the_default_data(learning_root, tmp_path):
    """A few hundred steps lift validation accuracy clearly above chance (1/32) and the loss
    falls. (Recognising the objects alone is worth up to about 61 % on this task.)"""
    L.seed_everything(0, workers=True)
    dm = DefaultDataModule(root=str(learning_root), num_train=480, num_val=160, num_test=10, data_seed=1,
                           batch_size=24, num_workers=0)
    task = ClassificationTask(
        tiny_model(dm.num_classes), num_classes=dm.num_classes,
        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3),
        scheduler=lambda opt: WarmupCosineLR(opt, warmup_steps=20),
    )
    trainer = L.Trainer(max_steps=300, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, val_check_interval=None,
                        check_val_every_n_epoch=1, num_sanity_val_steps=0)
    before = trainer.validate(task, datamodule=dm, verbose=False)[0]
    trainer.fit(task, datamodule=dm)
    after = trainer.validate(task, datamodule=dm, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"] - 0.05
    print("tiny model:", before, "->", after)
    assert after["val/acc"] > 0.12, after  # chance: 1/32 ≈ 0.03


def test_scheduler_learns_the_run_length_and_steps_per_step(default_root, tmp_path):
    dm = DefaultDataModule(root=str(default_root), num_train=40, num_val=10, num_test=10, batch_size=8, num_workers=0)
    task = ClassificationTask(
        tiny_model(dm.num_classes), num_classes=dm.num_classes,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        scheduler=lambda opt: WarmupCosineLR(opt, warmup_steps=2),
    )
    trainer = L.Trainer(max_epochs=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == 10  # 2 epochs × 5 batches, from trainer.estimated_stepping_batches
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine reached its floor


def test_test_outputs_and_predictions(default_root, tmp_path):
    dm = DefaultDataModule(root=str(default_root), num_train=40, num_val=10, num_test=10, batch_size=4, num_workers=0)
    task = ClassificationTask(tiny_model(dm.num_classes), num_classes=dm.num_classes, classes=dm.classes)
    trainer = L.Trainer(logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert set(metrics) >= {"test/acc", "test/f1", "test/loss"}
    out = Path(trainer.logger.log_dir)
    rows = [json.loads(x) for x in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and rows[0]["id"].startswith("test-")
    assert abs(sum(rows[0]["probs"].values()) - 1) < 1e-3
    confusion = (out / "confusion_matrix.txt").read_text().splitlines()
    assert sum(int(v) for line in confusion[2:] for v in line.split()[1:]) == 10
    preds = trainer.predict(task, datamodule=dm)
    assert sum(len(p) for p in preds) == 10 and preds[0][0]["predicted"] in task.classes


def test_missing_target_and_bad_sizes_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationTask(tiny_model(), num_classes=None)
    with pytest.raises(ValueError, match="3 class names for num_classes=4"):
        ClassificationTask(tiny_model(), num_classes=4, classes=["a", "b", "c"])
    task = ClassificationTask(tiny_model(), num_classes=4, target="count")
    from mmctx.types import MultimodalBatch

    with pytest.raises(KeyError, match="no target 'count'"):
        task._labels(MultimodalBatch(inputs={}, targets={"label": torch.zeros(2, dtype=torch.long)}))


def test_hand_built_task_does_not_pickle_modules_into_hparams():
    task = ClassificationTask(tiny_model(), num_classes=4)
    assert "model" not in task.hparams
    assert task.hparams["num_classes"] == 4


def _spoken_task(frame_loss_weight: float) -> ClassificationTask:
    from mmctx.context import RecurrentMemoryEncoder, StreamingMemoryEncoder

    torch.manual_seed(0)
    audio = RNNAudioEncoder(16000, 16, 400, 160, conv_channels=8, hidden_dim=16, num_layers=1, out_dim=16)
    n = int(audio.output_lengths(torch.tensor(8000 + 2560)))
    memory = RecurrentMemoryEncoder(16, 1, 2, segment_len=n, num_memory=2, bptt_segments=4, mlp_ratio=2.0)
    encoder = StreamingMemoryEncoder(audio, memory, segment_len=8000, context_len=2560, readout="max")
    model = FusionModel({"audio": encoder}, ConcatFusion({"audio": 16}, 16), ClassifierHead(16, 4, pooling="max"))
    return ClassificationTask(model, num_classes=4, frame_loss_weight=frame_loss_weight)


def test_frame_loss_is_added_in_training_only_where_asked(monkeypatch):
    from mmctx.data.builtin.spoken_long import SpokenLongDataset, collate_spoken

    batch = collate_spoken([SpokenLongDataset("val", 2, 1.5, 2.0, seed=0)[i] for i in range(2)])
    logged: dict[str, float] = {}
    losses = {}
    for weight in (0.0, 0.5):
        task = _spoken_task(weight)
        monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.__setitem__(name, value) if torch.is_tensor(value) else None)
        losses[weight] = float(task.training_step(batch, 0))
    # same weights (same seed): the class loss is the same, the frame loss is added with its weight
    logged = {k: float(v) for k, v in logged.items()}
    assert "train/frame_loss" in logged and losses[0.0] == pytest.approx(logged["train/class_loss"], rel=1e-5)
    assert losses[0.5] == pytest.approx(logged["train/class_loss"] + 0.5 * logged["train/frame_loss"], rel=1e-5)
    assert logged["train/frame_loss"] > 0
    with pytest.raises(KeyError, match="key_span"):
        _spoken_task(1.0)._frame_loss(type(batch)(inputs=batch.inputs, targets={"label": batch.targets["label"]}), batch.targets["label"])
    with pytest.raises(ValueError, match="no StreamingMemoryEncoder"):
        ClassificationTask(tiny_model(), num_classes=4, frame_loss_weight=1.0)._frame_loss(batch, batch.targets["label"])
    with pytest.raises(ValueError, match="frame_loss_weight"):
        ClassificationTask(tiny_model(), num_classes=4, frame_loss_weight=-1.0)
