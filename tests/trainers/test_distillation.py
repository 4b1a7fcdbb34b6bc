"""DistillationTask: the loss is alpha * T^2 * KL + (1 - alpha) * CE, the teacher is frozen
(no gradient, eval mode, not optimised, not changed by training) and comes from a checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mmctx.deploy import distillation_loss
from mmctx.encoders import TextTransformerEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.layers import masked_mean
from mmctx.losses import feature_distillation_loss
from mmctx.models import FusionModel
from mmctx.trainers import DistillationTask
from mmctx.trainers.checkpoints import save_safetensors
from mmctx.types import ModalityInput, MultimodalBatch


def text_model(dim: int, dropout: float = 0.0) -> FusionModel:
    return FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=dim, num_layers=1, num_heads=2, dropout=dropout)},
                       ConcatFusion({"text": dim}, dim), ClassifierHead(dim, num_classes=3, hidden_dim=dim, dropout=dropout))


def batches(n: int = 3) -> list[MultimodalBatch]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0], [1] * 6]).bool()
    return [MultimodalBatch({"text": ModalityInput(torch.randint(1, 20, (4, 6), generator=g) * mask, mask)},
                            targets={"label": torch.randint(0, 3, (4,), generator=g)}, ids=[f"s{i}{j}" for j in range(4)])
            for i in range(n)]


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(1)
    teacher = text_model(16, dropout=0.5)
    return save_safetensors(teacher, tmp_path / "teacher.safetensors"), teacher


def test_training_loss_is_the_distillation_loss_and_the_teacher_gets_no_gradient(teacher_file):
    path, reference = teacher_file
    torch.manual_seed(0)
    task = DistillationTask(text_model(8), str(path), teacher=text_model(16, dropout=0.5), temperature=3.0, alpha=0.6,
                            num_classes=3)
    for name, value in task.teacher.state_dict().items():  # weights came from the file
        assert torch.equal(value, reference.state_dict()[name]), name
    task.train()
    assert not task.teacher.training and task.model.training  # dropout off in the teacher only
    b = batches(1)[0]
    loss = task.training_step(b, 0)
    with torch.no_grad():
        reference.eval()
        expected, _ = distillation_loss(task.model(b), reference(b), b.targets["label"], 3.0, 0.6)
    # the student has no dropout, so its logits are the same in train and eval mode
    torch.testing.assert_close(loss, expected)
    assert set(task.loss_terms) == {"kd", "ce"}
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in task.teacher.parameters())
    assert all(p.grad is not None for p in task.model.parameters())
    optimised = {id(p) for group in task.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for p in task.model.parameters()}


def test_fit_moves_the_student_only(teacher_file, tmp_path):
    path, reference = teacher_file
    torch.manual_seed(0)
    task = DistillationTask(text_model(8), str(path), teacher=text_model(16), num_classes=3,
                            optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    student_before = {k: v.clone() for k, v in task.model.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, torch.utils.data.DataLoader(batches(), batch_size=None))
    assert all(torch.equal(v, teacher_before[k]) for k, v in task.teacher.state_dict().items())
    assert any(not torch.equal(v, student_before[k]) for k, v in task.model.state_dict().items())
    assert {"train/kd", "train/ce", "train/loss"} <= set(trainer.callback_metrics)


def test_a_teacher_of_another_architecture_or_no_file_is_refused(teacher_file, tmp_path):
    path, _ = teacher_file
    with pytest.raises(ValueError, match=r"shape mismatch .*: checkpoint \(20, 16\) vs model \(20, 8\)"):
        DistillationTask(text_model(8), str(path), teacher=text_model(8), num_classes=3)
    with pytest.raises(FileNotFoundError, match="teacher_checkpoint"):
        DistillationTask(text_model(8), str(tmp_path / "nope.ckpt"), num_classes=3)
    with pytest.raises(ValueError, match="alpha"):
        DistillationTask(text_model(8), str(path), teacher=text_model(16), alpha=1.5, num_classes=3)


def test_feature_distillation_adds_the_weighted_feature_terms_and_trains_the_projections(teacher_file):
    path, reference = teacher_file
    torch.manual_seed(0)
    task = DistillationTask(text_model(8), str(path), teacher=text_model(16, dropout=0.5), temperature=2.0, alpha=0.5,
                            feature_weight=0.3, features=["text", "pooled", "context"], num_classes=3)
    assert {k: (v.in_features, v.out_features) for k, v in task.projections.items()} == {
        "text": (8, 16), "pooled": (8, 16), "context": (8, 16)}
    task.train()
    b = batches(1)[0]
    loss = task.training_step(b, 0)
    assert set(task.loss_terms) == {"kd", "ce", "feat_text", "feat_pooled", "feat_context"}
    with torch.no_grad():
        reference.eval()
        kd_ce, _ = distillation_loss(task.model(b), reference(b), b.targets["label"], 2.0, 0.5)
        s_tok = task.model.encoders["text"](b.inputs["text"].data, b.inputs["text"].mask)
        t_tok = reference.encoders["text"](b.inputs["text"].data, b.inputs["text"].mask)
        s_ctx, t_ctx = task.model.encode(b), reference.encode(b)
        feats = (
            feature_distillation_loss(task.projections["text"](s_tok.x), t_tok.x, s_tok.mask)
            + feature_distillation_loss(task.projections["pooled"](masked_mean(s_ctx.x, s_ctx.mask)),
                                        masked_mean(t_ctx.x, t_ctx.mask))
            + feature_distillation_loss(task.projections["context"](s_ctx.x), t_ctx.x, s_ctx.mask)
        )
    torch.testing.assert_close(loss, kd_ce + 0.3 * feats)
    loss.backward()
    assert all(p.grad is not None for p in task.projections.parameters())
    assert all(p.grad is None for p in task.teacher.parameters())
    optimised = {id(p) for group in task.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for p in [*task.model.parameters(), *task.projections.parameters()]}


def test_feature_distillation_refuses_unknown_features(teacher_file):
    path, _ = teacher_file
    with pytest.raises(ValueError, match="'audio' is not"):
        DistillationTask(text_model(8), str(path), teacher=text_model(16), feature_weight=1.0, features=["audio"],
                         num_classes=3)
    with pytest.raises(ValueError, match="needs features"):
        DistillationTask(text_model(8), str(path), teacher=text_model(16), feature_weight=1.0, num_classes=3)
