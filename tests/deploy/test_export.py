"""Export: the classifier (encoders + fusion + head) and the encoders + fusion round-trip
through torch.export and ONNX (onnxruntime) with outputs equal to eager; torch.compile trains
like eager."""

from __future__ import annotations

import pytest
import torch

from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder, TimmImageEncoder
from mmctx.deploy import ExportAudioEncoder, example_inputs, export_onnx, export_program, exportable
from mmctx.fusion import ConcatFusion, CrossAttentionFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.types import ModalityInput, MultimodalBatch


def default_like(bidirectional: bool = True, num_layers: int = 2) -> FusionModel:
    """configs/default.yaml's architecture, narrower: image + audio, audio cross-attends the image."""
    torch.manual_seed(0)
    return FusionModel(
        {"image": TimmImageEncoder("resnet10t", out_dim=16, stage=3),
         "audio": RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=8, num_layers=num_layers,
                                  bidirectional=bidirectional, out_dim=16)},
        CrossAttentionFusion({"image": 16, "audio": 16}, 16, "audio", num_layers=2, num_heads=2, gated=False),
        ClassifierHead(16, num_classes=4, hidden_dim=16),
    ).eval()


def image_only() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel({"image": TimmImageEncoder("resnet10t", out_dim=16, stage=3)}, ConcatFusion({"image": 16}, 16),
                       ClassifierHead(16, num_classes=4, hidden_dim=16)).eval()


def batch() -> MultimodalBatch:
    """Ragged on purpose: the third image is missing, audio of 8000/5200/0 real samples."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([8000, 5200, 0])
    return MultimodalBatch({
        "image": ModalityInput(torch.rand(3, 3, 64, 64, generator=g), torch.tensor([True, True, False])),
        "audio": ModalityInput(torch.randn(3, 8000, generator=g) * 0.1, torch.arange(8000)[None] < lengths[:, None]),
    }, ids=["a", "b", "c"])


@pytest.mark.parametrize("bidirectional", [True, False])
def test_export_adapters_equal_the_eager_encoders(bidirectional):
    model = default_like(bidirectional)
    b = batch()
    with torch.no_grad():
        eager = model.encoders["audio"](b.inputs["audio"].data, b.inputs["audio"].mask)
        adapted = ExportAudioEncoder(model.encoders["audio"])(b.inputs["audio"].data, b.inputs["audio"].mask)
        torch.testing.assert_close(adapted.x, eager.x, atol=1e-6, rtol=1e-5)
        assert torch.equal(adapted.mask, eager.mask)
        ex = exportable(model)
        torch.testing.assert_close(ex(*example_inputs(b, ex.modalities)), model(b), atol=1e-6, rtol=1e-5)


def test_torch_export_of_the_classifier_and_of_encoders_plus_fusion():
    model = default_like()
    b = batch()
    with torch.no_grad():
        logits = model(b)
        context = model.encode(b)
    ex = exportable(model)
    args = example_inputs(b, ex.modalities)
    program = export_program(ex, args)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args), logits, atol=1e-5, rtol=1e-4)
    # the data are inputs, not constants: other values of the same shapes give other (eager) outputs
    b2 = batch()
    b2.inputs["image"] = ModalityInput(b2.inputs["image"].data.flip(-1), torch.tensor([True, False, True]))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*example_inputs(b2, ex.modalities)), model(b2), atol=1e-5, rtol=1e-4)

    ctx = exportable(model, output="context")
    x, mask = export_program(ctx, args).module()(*args)
    torch.testing.assert_close(x, context.x, atol=1e-5, rtol=1e-4)
    assert torch.equal(mask, context.mask)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["default", "image_only"])
def test_onnx_round_trip_with_onnxruntime(which, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = default_like() if which == "default" else image_only()
    b = batch()
    ex = exportable(model)
    args = example_inputs(b, ex.modalities)
    path = export_onnx(ex, args, tmp_path / f"{which}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == [n for m in ex.modalities for n in (m, f"{m}_mask")]  # masks are explicit inputs
    (out,) = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
    with torch.no_grad():
        eager = model({m: b.inputs[m] for m in ex.modalities})
    torch.testing.assert_close(torch.from_numpy(out), eager, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_onnx_encoders_plus_fusion(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = default_like(num_layers=1)
    b = batch()
    ex = exportable(model, output="context")
    args = example_inputs(b, ex.modalities)
    session = ort.InferenceSession(str(export_onnx(ex, args, tmp_path / "ctx.onnx")))
    x, mask = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)})
    with torch.no_grad():
        context = model.encode(b)
    torch.testing.assert_close(torch.from_numpy(x), context.x, atol=1e-4, rtol=1e-4)
    assert (torch.from_numpy(mask) == context.mask).all()


@pytest.mark.slow
def test_torch_compile_training_step_matches_eager():
    torch.manual_seed(0)
    model = FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=16, num_layers=1, num_heads=2)},
                        ConcatFusion({"text": 16}, 16), ClassifierHead(16, num_classes=3, hidden_dim=16))
    twin = FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=16, num_layers=1, num_heads=2)},
                       ConcatFusion({"text": 16}, 16), ClassifierHead(16, num_classes=3, hidden_dim=16))
    twin.load_state_dict(model.state_dict())
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]).bool()
    ids = torch.randint(1, 20, (3, 6), generator=torch.Generator().manual_seed(1)) * mask
    labels = torch.tensor([0, 1, 2])

    def step(forward, m):
        logits = forward({"text": ModalityInput(ids, mask)})
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    loss_eager, grads_eager = step(model, model)
    loss_compiled, grads_compiled = step(torch.compile(twin), twin)  # inductor: C++ kernels on the CPU
    torch.testing.assert_close(loss_compiled, loss_eager, atol=1e-5, rtol=1e-4)
    assert grads_compiled.keys() == grads_eager.keys() and grads_eager
    for name in grads_eager:
        torch.testing.assert_close(grads_compiled[name], grads_eager[name], atol=1e-5, rtol=1e-4, msg=name)
