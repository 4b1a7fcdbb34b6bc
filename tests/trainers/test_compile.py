"""The tasks' ``compile`` switch: the compiled model computes the eager model's loss and
gradients, keeps its parameter names, and compiles its forward once for a fixed batch shape;
a submodule scope (``compile: "decoder"``) compiles only that part."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mmctx.data import DefaultDataModule
from mmctx.encoders import TimmImageEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import TextDecoder
from mmctx.models import EncoderDecoderModel
from mmctx.trainers import CaptioningTask

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def tiny_task_and_batch(root, dim: int = 16, dropout: float = 0.0, **task_args):
    dm = DefaultDataModule(root=str(root), num_train=40, num_val=10, num_test=10, data_seed=0, modalities=["image"],
                           caption_field="caption", label_field=None, max_text_len=16, batch_size=4, num_workers=0)
    dm.setup("fit")
    torch.manual_seed(0)
    model = EncoderDecoderModel(
        encoders={"image": TimmImageEncoder("resnet10t", out_dim=dim, stage=2)},
        fusion=ConcatFusion({"image": dim}, dim),
        decoder=TextDecoder(dm.vocab_size, dim, num_layers=2, num_heads=4, max_seq_len=16,
                            pad_id=dm.pad_id, bos_id=dm.bos_id, eos_id=dm.eos_id, dropout=dropout),
    )
    return CaptioningTask(model, **task_args), next(iter(dm.train_dataloader()))


@pytest.mark.slow
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

    # steady state: from the second call on, batches of the same shape compile nothing new
    # (the image encoder no longer fills a dict inside the graph, which made Dynamo recompile
    # the second call)
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    assert frames > 0
    compiled.loss(batch).backward()
    compiled.loss(batch).backward()
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames


@pytest.mark.slow
def test_caption_model_forward_is_one_graph_without_breaks(default_root):
    """The whole caption model's teacher-forced forward (image encoder, fusion, decoder)
    traces as ONE Dynamo graph: no break at the image encoder's "present images" selection."""
    torch._dynamo.reset()
    task, batch = tiny_task_and_batch(default_root)
    task.train()
    ids = batch.targets["caption"][:, :-1]  # (B, T-1)
    id_mask = batch.targets["caption_mask"][:, :-1]
    explained = torch._dynamo.explain(task.model)(batch, ids, id_mask)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.slow
def test_compiled_image_encoder_with_missing_images_matches_eager():
    """Compiled, the encoder runs every row and zeroes the missing ones: the same tokens as the
    eager "present images only" path (eval mode, so BatchNorm uses running statistics), one
    graph, and a second call (another mask, same shapes) compiles nothing."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    encoder = TimmImageEncoder("resnet10t", out_dim=16, stage=2).eval()
    images = torch.rand(3, 3, 32, 32)
    images[1] = float("nan")  # a missing image's padding is never read
    mask = torch.tensor([True, False, True])
    eager = encoder(images, mask)
    compiled = torch.compile(encoder, fullgraph=True)  # fullgraph: a graph break is an error
    with torch.no_grad():
        out = compiled(images, mask)
        frames = torch._dynamo.utils.counters["frames"]["ok"]
        again = compiled(images, torch.tensor([False, False, True]))
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames
    torch.testing.assert_close(out.x, eager.x, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.mask, eager.mask)
    assert torch.equal(out.x[1], torch.zeros_like(out.x[1]))
    assert torch.equal(again.x[:2], torch.zeros_like(again.x[:2]))
    torch.testing.assert_close(again.x[2], eager.x[2], atol=1e-5, rtol=1e-5)


def test_compile_scope_compiles_only_the_named_submodules(default_root):
    """``compile: "decoder"`` (or a list of dotted names) wraps only those modules; the model
    itself and the image encoder stay eager; names and checkpoints are unchanged."""
    eager, _ = tiny_task_and_batch(default_root)
    task = CaptioningTask(copy.deepcopy(eager.model), compile=["decoder", "encoders.image.proj"])
    task.configure_model()
    model = task.model
    assert model._compiled_call_impl is None
    assert model.decoder._compiled_call_impl is not None
    assert model.encoders["image"].proj._compiled_call_impl is not None
    assert model.encoders["image"].backbone._compiled_call_impl is None
    assert model.fusion._compiled_call_impl is None
    assert list(task.state_dict()) == list(eager.state_dict())

    whole = CaptioningTask(copy.deepcopy(eager.model), compile=True)
    assert whole.compile_targets() == [whole.model]
    assert CaptioningTask(copy.deepcopy(eager.model)).compile_targets() == []


@pytest.mark.parametrize("scope", ["decodr", ["decoder", "encoders.audio"], [], ""])
def test_compile_scope_rejects_unknown_names(default_root, scope):
    eager, _ = tiny_task_and_batch(default_root)
    with pytest.raises(ValueError, match="compile: "):
        CaptioningTask(eager.model, compile=scope)


@pytest.mark.slow
def test_decoder_scope_matches_eager_loss_and_gradients_with_dropout(default_root):
    """``compile: "decoder"``: the same loss and gradients as eager in training mode WITH
    dropout (the switch's ``fallback_random``: the compiled dropout draws eager's random
    numbers, so one seed gives the same masks), the CNN eager; no recompile on the next call."""
    torch._dynamo.reset()
    eager, batch = tiny_task_and_batch(default_root, dropout=0.3)
    compiled = CaptioningTask(copy.deepcopy(eager.model), compile="decoder")
    assert compiled.compile_options == {"fallback_random": True}
    compiled.configure_model()
    losses = {}
    for name, task in (("eager", eager), ("compiled", compiled)):
        task.train()
        task.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        loss = task.loss(batch)
        loss.backward()
        losses[name] = loss.detach()
    torch.testing.assert_close(losses["compiled"], losses["eager"], atol=1e-5, rtol=1e-5)
    for (name, p_eager), p_compiled in zip(eager.named_parameters(), compiled.parameters()):
        if p_eager.grad is not None:
            torch.testing.assert_close(p_compiled.grad, p_eager.grad, atol=1e-5, rtol=1e-4, msg=name)
    torch.manual_seed(2)  # another seed: other masks, so the equality above is not dropout-free by chance
    other = eager.loss(batch).detach()
    assert not torch.allclose(other, losses["eager"])
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    assert frames > 0
    compiled.loss(batch).backward()
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("decoder", "decoder"), ("[fusion, decoder]", ["fusion", "decoder"])])
def test_compile_switch_parses_from_the_command_line(default_root, small_data, value, expected):
    """``--model.init_args.compile=...`` (or ``compile:`` in YAML): a bool, one name or a list."""
    import lightning as L

    from mmctx.cli import MMCtxCLI

    args = [f"--config={REPO / 'configs' / 'caption_image.yaml'}", f"--data.root={default_root}",
            "--data.num_workers=0", *(f"--data.{k}={v}" for k, v in small_data.items()),
            f"--model.init_args.compile={value}"]
    cli = MMCtxCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                   auto_configure_optimizers=False, run=False, args=args)
    assert cli.model.compile_model == expected
    assert len(cli.model.compile_targets()) == (1 if expected is True or isinstance(expected, str) else 2)
