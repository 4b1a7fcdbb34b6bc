"""Checkpoint I/O: safetensors checkpoints are written atomically and reload equal; the one
weight loader refuses a checkpoint of another architecture with the mismatched keys listed,
for every caller; a checkpoint naming a moved class path says where it went."""

from __future__ import annotations

import os
import re

import lightning as L
import pytest
import torch

from mmctx.encoders import TextTransformerEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.trainers import AtomicCheckpointIO, Checkpoint, ClassificationTask, SafetensorsCheckpoint, load_weights
from mmctx.trainers.checkpoints import MOVED_CLASS_PATHS, atomic_write, check_moved_class_paths, save_safetensors
from mmctx.types import ModalityInput, MultimodalBatch


def text_model(dim: int = 8, layers: int = 1) -> FusionModel:
    return FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=dim, num_layers=layers, num_heads=2)},
                       ConcatFusion({"text": dim}, dim), ClassifierHead(dim, num_classes=3))


def loader(n: int = 3) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 5, dtype=torch.bool)
    data = [MultimodalBatch({"text": ModalityInput(torch.randint(1, 20, (2, 5), generator=g), mask)},
                            targets={"label": torch.tensor([0, 2])}, ids=[f"doc{i}a", f"doc{i}b"]) for i in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=None)


def test_safetensors_checkpoints_are_written_beside_the_ckpt_and_reload_equal(tmp_path):
    torch.manual_seed(0)
    task = ClassificationTask(text_model(), num_classes=3)
    checkpoint = SafetensorsCheckpoint(dirpath=tmp_path / "ckpt", filename="best", save_last=True,
                                       monitor="train/loss", mode="min")
    L.Trainer(max_epochs=2, callbacks=[checkpoint], logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).fit(task, loader())
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["best.ckpt", "best.safetensors", "last.ckpt", "last.safetensors"]  # no temporary file left
    fresh = load_weights(text_model(), tmp_path / "ckpt" / "last.safetensors")
    for name, value in task.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    # the Lightning checkpoint loads the same way (weights_only, `model.` prefix dropped)
    again = load_weights(text_model(), tmp_path / "ckpt" / "last.ckpt")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in fresh.state_dict().items())


def test_last_ckpt_is_the_last_epoch_even_when_the_monitor_never_improves(tmp_path):
    """Lightning 2.6 rewrites last.ckpt only together with a top-k save; Checkpoint does not."""
    torch.manual_seed(0)
    task = ClassificationTask(text_model(), num_classes=3)
    # "max" of a falling loss: only epoch 0 is ever the best
    kwargs = dict(filename="best", save_last=True, monitor="train/loss", mode="max")
    ours, theirs = Checkpoint(dirpath=tmp_path / "ours", **kwargs), L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "theirs", **kwargs)
    L.Trainer(max_epochs=3, callbacks=[ours, theirs], logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path, plugins=[AtomicCheckpointIO()]).fit(task, loader())
    step = lambda path: torch.load(path, weights_only=True)["global_step"]  # noqa: E731
    assert step(tmp_path / "ours" / "best.ckpt") == 3 and step(tmp_path / "ours" / "last.ckpt") == 9
    assert step(tmp_path / "theirs" / "last.ckpt") == 3  # the behaviour Checkpoint corrects
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails_and_respects_the_umask(tmp_path):
    target = tmp_path / "last.ckpt"
    old_umask = os.umask(0o022)
    try:
        atomic_write(target, lambda tmp: tmp.write_bytes(b"old"))
    finally:
        os.umask(old_umask)
    assert target.stat().st_mode & 0o777 == 0o644  # like any new file (mkstemp's would be 0600)

    def half_then_crash(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # e.g. a signal in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_mismatched_architecture_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    torch.manual_seed(0)
    path = save_safetensors(text_model(dim=8, layers=2), tmp_path / "two_layers.safetensors")
    target = text_model(dim=8, layers=1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_weights(target, path)
    message = str(err.value)
    assert "not in the model: encoders.text.encoder.blocks.1.attn.q_proj.weight" in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing loaded

    path = save_safetensors(text_model(dim=12), tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match=r"shape mismatch head.norm.weight: checkpoint \(12,\) vs model \(8,\)"):
        load_weights(text_model(dim=8), path)
    with pytest.raises(ValueError, match=r"missing in checkpoint: encoders.text.encoder.blocks.1"):
        load_weights(text_model(dim=8, layers=2), tmp_path / "wide.safetensors")


def test_task_load_state_dict_and_load_from_checkpoint_name_the_keys_and_shapes(tmp_path):
    """Lightning's loading path (``Task.load_from_checkpoint``, resuming; DistillationTask's
    teacher) goes through the same check as load_weights."""
    torch.manual_seed(0)
    wide = ClassificationTask(text_model(dim=12), num_classes=3)
    torch.save({"state_dict": wide.state_dict(), "hyper_parameters": {"num_classes": 3},
                "pytorch-lightning_version": L.__version__}, tmp_path / "wide.ckpt")
    narrow = ClassificationTask(text_model(dim=8, layers=2), num_classes=3)
    before = {k: v.clone() for k, v in narrow.state_dict().items()}
    with pytest.raises(ValueError) as err:
        narrow.load_state_dict(wide.state_dict())
    message = str(err.value)
    assert "shape mismatch model.head.norm.weight: checkpoint (12,) vs model (8,)" in message
    assert "missing in checkpoint: model.encoders.text.encoder.blocks.1" in message
    assert all(torch.equal(v, before[k]) for k, v in narrow.state_dict().items())  # nothing loaded
    with pytest.raises(ValueError, match=r"shape mismatch model\.head\.norm\.weight: checkpoint \(12,\) vs model \(8,\)"):
        ClassificationTask.load_from_checkpoint(tmp_path / "wide.ckpt", model=text_model(dim=8))
    extra = dict(wide.state_dict(), **{"model.head.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"not in the model: model\.head\.extra"):
        ClassificationTask(text_model(dim=12), num_classes=3).load_state_dict(extra)
    # a matching checkpoint loads as before; strict=False is left to torch
    again = ClassificationTask.load_from_checkpoint(tmp_path / "wide.ckpt", model=text_model(dim=12))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in wide.state_dict().items())
    ClassificationTask(text_model(dim=12), num_classes=3).load_state_dict(extra, strict=False)


def test_a_checkpoint_naming_a_moved_class_path_says_where_it_went(tmp_path, monkeypatch):
    torch.manual_seed(0)
    task = ClassificationTask(text_model(), num_classes=3)
    assert MOVED_CLASS_PATHS["mmctx.export.ExportableModel"] == "mmctx.deploy.ExportableModel"
    # an entry whose old module surely no longer imports (an editable install of an older
    # checkout can still resolve mmctx.export)
    old = "mmctx.gone_in_0_2.FusionModel"
    monkeypatch.setitem(MOVED_CLASS_PATHS, old, "mmctx.models.FusionModel")
    hparams = {"_instantiator": "lightning.pytorch.cli.instantiate_module", "num_classes": 3,
               "model": {"class_path": old, "init_args": {}}}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": L.__version__}, path)
    message = f"refers to `{old}`, which moved to `mmctx.models.FusionModel` in mmctx 0.2"
    with pytest.raises(ImportError, match=re.escape(message)):
        ClassificationTask.load_from_checkpoint(path)
    with pytest.raises(ImportError, match=re.escape(message)):
        check_moved_class_paths(torch.load(path, weights_only=True))
    # the weights themselves still load into a model built with the new paths
    assert load_weights(text_model(), path) is not None
    # a path that still imports is no error
    check_moved_class_paths({"hyper_parameters": {"model": {"class_path": "mmctx.models.FusionModel"}}})
    assert all(new.startswith("mmctx.") for new in MOVED_CLASS_PATHS.values())


def test_every_moved_path_names_a_new_path_that_imports() -> None:
    """Each entry's new path (before an optional note such as `(window=...)`) imports, and the
    old one no longer does: the table cannot point users at a name that does not exist."""
    import importlib

    def imports(path: str) -> bool:
        module, _, name = path.rpartition(".")
        try:
            return hasattr(importlib.import_module(module), name)
        except ImportError:
            return False

    assert [new for new in MOVED_CLASS_PATHS.values() if not imports(new.split(" ")[0])] == []
    still_there = [old for old in MOVED_CLASS_PATHS if imports(old)]
    # the pretraining module still imports its moved helpers, so those old paths resolve
    assert set(still_there) <= {"mmctx.trainers.pretraining.PretrainingBackbone",
                                "mmctx.trainers.pretraining.recall_at_k", "mmctx.trainers.pretraining.caption_groups"}
