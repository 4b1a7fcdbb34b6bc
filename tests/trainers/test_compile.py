"""The tasks' ``compile`` switch: the compiled model computes the eager model's loss and
gradients, keeps its parameter names, and compiles its forward once for a fixed batch shape."""

from __future__ import annotations

import copy

import pytest
import torch

from mmctx.trainers import CaptioningTask

from tests.trainers.test_captioning import datamodule, first_batch, tiny_captioner

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_compiled_captioning_task_matches_eager_loss_and_gradients(default_root):
    torch._dynamo.reset()
    dm = datamodule(default_root, batch_size=4)
    batch = first_batch(dm)
    eager = CaptioningTask(tiny_captioner(dm, dim=16))
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

    # a second batch of the same shape runs the compiled graphs again: no new compilation
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    compiled.loss(batch).backward()
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames
