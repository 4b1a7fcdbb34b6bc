"""Faults: the NaN/Inf guard skips or stops as configured."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mmctx.encoders import TextTransformerEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.trainers import ClassificationTask, NonFiniteGuard, NonFiniteLossError
from mmctx.types import ModalityInput, MultimodalBatch


def text_model(dim: int = 8, layers: int = 1) -> FusionModel:
    return FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=dim, num_layers=layers, num_heads=2)},
                       ConcatFusion({"text": dim}, dim), ClassifierHead(dim, num_classes=3))


class PoisonedTask(ClassificationTask):
    """Multiplies the loss of one batch by NaN: a fault in one batch, as a real one would be."""

    def __init__(self, model, poison: int, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.poison = poison

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx == self.poison else loss


def loader(n: int = 3) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 5, dtype=torch.bool)
    data = [MultimodalBatch({"text": ModalityInput(torch.randint(1, 20, (2, 5), generator=g), mask)},
                            targets={"label": torch.tensor([0, 2])}, ids=[f"doc{i}a", f"doc{i}b"]) for i in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=None)


def fit(task, callbacks, tmp_path, **kwargs) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, callbacks=callbacks, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kwargs)
    trainer.fit(task, loader())
    return trainer


def test_skip_leaves_the_weights_of_the_bad_step_untouched(tmp_path):
    torch.manual_seed(0)
    task = PoisonedTask(text_model(), poison=1, num_classes=3, optimizer=lambda p: torch.optim.AdamW(p, lr=0.1))
    # the weights after step 0, to compare with those after the skipped step 1
    seen = []

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append({k: v.clone() for k, v in pl_module.state_dict().items()})

    guard = NonFiniteGuard(action="skip")
    trainer = fit(task, [guard, Snapshot()], tmp_path)
    assert [s["batch_idx"] for s in guard.skipped] == [1]
    assert guard.skipped[0]["ids"] == ["doc1a", "doc1b"] and "loss = nan" in guard.skipped[0]["terms"][0]
    assert all(torch.equal(seen[1][k], seen[0][k]) for k in seen[0])  # step 1 changed nothing
    assert any(not torch.equal(seen[2][k], seen[1][k]) for k in seen[0])  # step 2 trained again
    assert all(torch.isfinite(p).all() for p in task.parameters())
    assert trainer.optimizers[0].state[next(task.parameters())]["step"] == 2  # Adam counted two real steps


def test_stop_raises_naming_the_step_the_batch_ids_and_the_term(tmp_path):
    torch.manual_seed(0)
    task = PoisonedTask(text_model(), poison=2, num_classes=3)
    with pytest.raises(NonFiniteLossError, match=r"loss = nan at global step 2 \(epoch 0, batch 2\), batch ids \['doc2a', 'doc2b'\]"):
        fit(task, [NonFiniteGuard(action="stop")], tmp_path)


def test_non_finite_gradient_with_a_finite_loss_is_caught(tmp_path):
    torch.manual_seed(0)
    task = ClassificationTask(text_model(), num_classes=3)
    task.model.head.mlp[-1].weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient of model.head.mlp.1.weight"):
        fit(task, [NonFiniteGuard(action="stop")], tmp_path)
    with pytest.raises(ValueError, match="action"):
        NonFiniteGuard(action="ignore")
