"""EMAWeights: the average is what validation and the checkpoint see, the raw weights are
kept for resuming, and loading the checkpoint for testing is silent."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

from mmctx.encoders import TextTransformerEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.trainers import ClassificationTask, EMAWeights
from mmctx.types import ModalityInput, MultimodalBatch


def task() -> ClassificationTask:
    torch.manual_seed(0)
    model = FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=8, num_layers=1, num_heads=2)},
                        ConcatFusion({"text": 8}, 8), ClassifierHead(8, num_classes=3))
    return ClassificationTask(model, num_classes=3, optimizer=lambda p: torch.optim.SGD(p, lr=0.5))


def loader(n: int = 4) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 5, dtype=torch.bool)
    data = [MultimodalBatch({"text": ModalityInput(torch.randint(1, 20, (2, 5), generator=g), mask)},
                            targets={"label": torch.tensor([0, 2])}, ids=[f"d{i}a", f"d{i}b"]) for i in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=None)


def trainer(tmp_path, callbacks) -> L.Trainer:
    return L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, callbacks=callbacks)


def test_the_checkpoint_holds_the_average_and_the_raw_weights(tmp_path):
    decay = 0.5
    t = task()
    raw_steps: list[dict[str, torch.Tensor]] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            raw_steps.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    # the recorder runs before the average's update: the same weights either way
    tr = trainer(tmp_path, [Record(), EMAWeights(decay=decay)])
    tr.fit(t, loader())
    expected = {}
    for k in raw_steps[0]:
        avg = raw_steps[0][k].float()  # the first update copies
        for step in raw_steps[1:]:
            avg = decay * avg + (1 - decay) * step[k].float()
        expected[k] = avg
    averaged = {k: v for k, v in t.model.state_dict().items() if v.is_floating_point()}
    for k, v in averaged.items():  # after fit the model holds the average
        torch.testing.assert_close(v, expected[k].to(v.dtype), msg=k)
    assert any(not torch.allclose(raw_steps[-1][k], v) for k, v in averaged.items())  # not the last step
    tr.save_checkpoint(tmp_path / "x.ckpt")
    blob = torch.load(tmp_path / "x.ckpt", weights_only=False)
    assert "current_model_state" in blob  # the raw weights, for resuming


def test_testing_from_the_checkpoint_uses_the_average_silently(tmp_path):
    t = task()
    tr = trainer(tmp_path, [EMAWeights(decay=0.9)])
    tr.fit(t, loader(), loader(2))
    path = tmp_path / "fit.ckpt"
    tr.save_checkpoint(path)
    fresh = task()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|isinstance).*")
        results = trainer(tmp_path, [EMAWeights(decay=0.9)]).test(fresh, loader(2), ckpt_path=str(path), verbose=False)
    assert results and "test/acc" in results[0]
    for k, v in t.model.state_dict().items():
        torch.testing.assert_close(fresh.model.state_dict()[k], v, msg=k)


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        EMAWeights(decay=1.0)
