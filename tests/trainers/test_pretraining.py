"""PretrainingTask (contrastive + ITM + MLM, retrieval metrics), fine-tuning from its checkpoint
(InitFromCheckpoint: exact weights, clear mismatch errors, freezing), and the DDP-gathered
contrastive loss."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mmctx.data import DefaultDataModule, MultimodalCollate
from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder, TimmImageEncoder
from mmctx.fusion import ConcatFusion, CrossAttentionFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.trainers import ClassificationTask, InitFromCheckpoint, PretrainingTask
from mmctx.trainers.checkpoints import freeze_submodules, load_submodules

D = 16


def encoders(vocab_size: int, image_dim: int = D) -> dict[str, torch.nn.Module]:
    return {
        "image": TimmImageEncoder("resnet10t", out_dim=image_dim, stage=2),
        "audio": RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=D, num_layers=1, out_dim=D),
        "text": TextTransformerEncoder(vocab_size, dim=D, num_layers=1, num_heads=2, max_seq_len=24),
    }


def pretraining_data(root: Path, small_data: dict, **kwargs) -> DefaultDataModule:
    return DefaultDataModule(root=str(root), **small_data, modalities=["image", "audio", "text"], text_field="caption",
                             audio_field="caption_audio", caption_field="caption", label_field=None,
                             max_text_len=24, batch_size=10, num_workers=0, **kwargs)


def pretraining_task(vocab_size: int, mask_id: int = 4, **kwargs) -> PretrainingTask:
    torch.manual_seed(0)
    return PretrainingTask(
        encoders(vocab_size),
        fusion=CrossAttentionFusion({"image": D, "audio": D, "text": D}, D, query_modality="text", num_heads=2,
                                    gated=False),
        embed_dim=D, contrastive_pairs=[["image", "text"], ["audio", "text"]], itm_pairs=[["image", "text"]],
        itm_weight=1.0, mlm_weight=1.0, vocab_size=vocab_size, pad_id=0, mask_id=mask_id,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3), **kwargs,
    )


def test_every_objective_gets_gradients_and_is_logged(default_root, small_data, tmp_path):
    dm = pretraining_data(default_root, small_data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    task = pretraining_task(dm.vocab_size)
    for module in task.modules():  # timm zero-initialises each block's last BatchNorm: no gradient inside at init
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    terms = task.losses(batch)
    assert {"contrastive_image_text", "contrastive_audio_text", "itm_image_text", "mlm", "loss"} <= set(terms)
    expected = terms["contrastive_image_text"] + terms["contrastive_audio_text"] + terms["itm_image_text"] + terms["mlm"]
    assert torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    missing = [n for n, p in task.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    # the fusion's audio projection is unused by the image-text ITM
    assert all(n.startswith("model.fusion.proj.audio") for n in missing), missing


@pytest.mark.slow
def test_pretraining_learns_and_logs_retrieval(default_root, small_data, tmp_path):
    dm = pretraining_data(default_root, small_data)
    task = pretraining_task(dm.vocab_size, mask_id=None)  # mask_id read from the data's tokenizer
    trainer = L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    before = trainer.validate(task, datamodule=dm, verbose=False)[0]
    assert task.mask_id == dm.tokenizer.mask_id
    for name in ("r1_text2image", "r5_image2text", "r10_text2audio", "r1_audio2text", "mean_r1"):
        assert 0.0 <= before[f"val/{name}"] <= 1.0
    trainer.fit(task, datamodule=dm)
    logged = set(trainer.callback_metrics)
    for term in ("loss", "contrastive_image_text", "contrastive_audio_text", "itm_image_text", "mlm",
                 "temperature_image_text", "temperature_audio_text"):
        assert f"train/{term}" in logged, term
    after = trainer.validate(task, datamodule=dm, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"]
    test = trainer.test(task, datamodule=dm, verbose=False)[0]
    assert "test/r1_text2image" in test


def _pretraining_checkpoint(tmp_path: Path, vocab_size: int) -> tuple[Path, PretrainingTask]:
    task = pretraining_task(vocab_size)
    path = tmp_path / "pretrain.ckpt"
    torch.save({"state_dict": task.state_dict()}, path)
    return path, task


def classifier(image_dim: int = D) -> FusionModel:
    torch.manual_seed(1)
    enc = encoders(8, image_dim)
    del enc["text"]
    return FusionModel(enc, ConcatFusion({"image": image_dim, "audio": D}, D), ClassifierHead(D, num_classes=32))


def test_init_from_loads_exactly_the_matching_weights(tmp_path):
    path, pretrained = _pretraining_checkpoint(tmp_path, vocab_size=60)
    model = classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_submodules(model, path, ["encoders.image", "encoders.audio"])
    source = pretrained.state_dict()
    assert sorted(loaded) == sorted(k for k in model.state_dict() if k.startswith("encoders."))
    for name, value in model.state_dict().items():
        if name.startswith("encoders."):
            assert torch.equal(value, source[f"model.{name}"]), name
        else:
            assert torch.equal(value, before[name]), f"{name} should not change"
    assert not torch.equal(model.state_dict()["encoders.image.proj.weight"], before["encoders.image.proj.weight"])
    # a plain state dict (torch.save(model.state_dict())) works too
    torch.save(pretrained.model.state_dict(), tmp_path / "plain.pt")
    assert load_submodules(classifier(), tmp_path / "plain.pt", ["encoders.audio"])


def test_init_from_rejects_a_mismatched_checkpoint_naming_the_keys(tmp_path):
    path, _ = _pretraining_checkpoint(tmp_path, vocab_size=60)
    model = classifier(image_dim=32)  # a wider image projection than the checkpoint's
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"shape mismatch encoders\.image\.proj\.weight: checkpoint \(16, 128\) vs model \(32, 128\)"):
        load_submodules(model, path, ["encoders.audio", "encoders.image"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "nothing is loaded on error"
    with pytest.raises(ValueError, match=r"no weights for 'head'"):
        load_submodules(classifier(), path, ["head"])
    other_fusion = classifier()  # ConcatFusion over image+audio vs the checkpoint's 3-way cross-attention
    with pytest.raises(ValueError, match=r"not in the model: fusion\.blocks\.0[\s\S]*not in the model: fusion\.proj\.text\.weight"
                       r"[\s\S]*shape mismatch fusion\.type_embed\.weight: checkpoint \(3, 16\) vs model \(2, 16\)"):
        load_submodules(other_fusion, path, ["fusion"])
    with pytest.raises(ValueError, match="no submodule 'encoders.video'"):
        load_submodules(classifier(), path, ["encoders.video"])
    with pytest.raises(FileNotFoundError):
        load_submodules(classifier(), tmp_path / "nope.ckpt", ["encoders.image"])


def test_fine_tuning_callback_loads_and_freezes(default_root, small_data, tmp_path):
    path, pretrained = _pretraining_checkpoint(tmp_path, vocab_size=60)
    dm = DefaultDataModule(root=str(default_root), **small_data, batch_size=8, num_workers=0)
    task = ClassificationTask(classifier(), num_classes=32)
    callback = InitFromCheckpoint(str(path), modules=["encoders.image", "encoders.audio"], freeze=["encoders.image"])
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[callback])
    trainer.fit(task, datamodule=dm)
    source = pretrained.state_dict()
    image = task.model.encoders["image"]
    assert all(torch.equal(v, source[f"model.encoders.image.{k}"]) for k, v in image.state_dict().items()), \
        "the frozen encoder (BatchNorm statistics included) must not move"
    assert not image.training and not any(p.requires_grad for p in image.parameters())
    audio = task.model.encoders["audio"].state_dict()
    assert any(not torch.equal(v, source[f"model.encoders.audio.{k}"]) for k, v in audio.items()), "audio trains"
    frozen = freeze_submodules(task.model, ["fusion"])
    assert frozen == [task.model.fusion]


# ---------------------------------------------------------------------------------- DDP


class _Items(torch.utils.data.Dataset):
    """Four fixed audio+text samples (no BatchNorm anywhere, so per-process batches do not
    change the encoders' outputs)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [{"id": f"s{i}", "audio": 0.1 * torch.randn(2400 + 400 * i, generator=g),
                       "text": torch.randint(5, 40, (3 + i,), generator=g)} for i in range(4)]

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _ddp_task() -> PretrainingTask:
    torch.manual_seed(0)
    return PretrainingTask(
        {"audio": RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=D, num_layers=1, out_dim=D),
         "text": TextTransformerEncoder(40, dim=D, num_layers=1, num_heads=2)},
        contrastive_pairs=[["audio", "text"]], embed_dim=D, positive_key=None,
        optimizer=functools.partial(torch.optim.SGD, lr=0.5),
    )


@pytest.mark.slow
def test_ddp_gathered_contrastive_loss_and_step_equal_one_process_on_the_global_batch(tmp_path):
    data = _Items()
    task = _ddp_task()
    trainer = L.Trainer(strategy="ddp_spawn", accelerator="cpu", devices=2, max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(task, DataLoader(data, batch_size=2, shuffle=False, collate_fn=MultimodalCollate(0)))
    ddp_loss = float(trainer.callback_metrics["train/contrastive_audio_text"])

    reference = _ddp_task()  # the same initial weights, one process, the whole global batch
    global_batch = MultimodalCollate(0)([data[i] for i in range(4)])
    loss = reference.losses(global_batch)["contrastive_audio_text"]
    assert ddp_loss == pytest.approx(float(loss), abs=1e-5)
    # and the gradients too (sync_grads): one SGD step lands on the same weights
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    for (name, p), q in zip(reference.named_parameters(), task.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
