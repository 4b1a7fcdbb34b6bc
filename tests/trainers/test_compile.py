"""The tasks' ``compile`` switch: the compiled model computes the eager model's loss and
gradients, keeps its parameter names, and compiles its forward once for a fixed batch shape."""

from __future__ import annotations

import copy

import pytest
import torch

from mmctx.data import DefaultDataModule
from mmctx.encoders import TimmImageEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import TextDecoder
from mmctx.models import EncoderDecoderModel
from mmctx.trainers import CaptioningTask

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def tiny_task_and_batch(root, dim: int = 16, **task_args):
    dm = DefaultDataModule(root=str(root), num_train=40, num_val=10, num_test=10, data_seed=0, modalities=["image"],
                           caption_field="caption", label_field=None, max_text_len=16, batch_size=4, num_workers=0)
    dm.setup("fit")
    torch.manual_seed(0)
    model = EncoderDecoderModel(
        encoders={"image": TimmImageEncoder("resnet10t", out_dim=dim, stage=2)},
        fusion=ConcatFusion({"image": dim}, dim),
        decoder=TextDecoder(dm.vocab_size, dim, num_layers=2, num_heads=4, max_seq_len=16,
                            pad_id=dm.pad_id, bos_id=dm.bos_id, eos_id=dm.eos_id),
    )
    return CaptioningTask(model, **task_args), next(iter(dm.train_dataloader()))


def test_compiled_captioning_task_matches_eager_loss_and_gradients(default_root):
    torch._dynamo.reset()
    eager, batch = tiny_task_and_batch(default_root)
    compiled = CaptioningTask(copy.deepcopy(eager.model), compile=True)
    assert not compiled._model_compiled
    compiled.configure_model()  # what the Trainer calls at the start of fit/validate/test/predict
    compiled.configure_model()  # a second fit does not wrap it twice
    assert compiled.model._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints stay interchangeable

    losses = {}
    for name, task in (("eager", eager), ("compiled", compiled)):
        task.train()
        task.zero_grad(set_to_none=True)
        loss = task.loss(batch)
        loss.backward()
        losses[name] = loss.detach()
    torch.testing.assert_close(losses["compiled"], losses["eager"], atol=1e-5, rtol=1e-5)
    for (name, p_eager), p_compiled in zip(eager.named_parameters(), compiled.parameters()):
        if p_eager.grad is not None:
            torch.testing.assert_close(p_compiled.grad, p_eager.grad, atol=1e-5, rtol=1e-4, msg=name)

    # steady state: further batches of the same shape compile nothing new. (The second call
    # still recompiles one frame: TimmImageEncoder.forward fills its _grid_cache dict on the
    # first call, and Dynamo guards on that dict being empty.)
    compiled.loss(batch).backward()
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    compiled.loss(batch).backward()
    compiled.loss(batch).backward()
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames
