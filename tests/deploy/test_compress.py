"""Compression: dynamic int8 quantization, magnitude pruning with a schedule (also through
Lightning's ModelPruning), and the distillation loss."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from mmctx.deploy import (
    PRUNABLE,
    SparsitySchedule,
    distillation_loss,
    make_pruning_permanent,
    model_size_bytes,
    prune_magnitude,
    quantize_dynamic_int8,
    quantized_modules,
    sparsity,
)
from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder, TimmImageEncoder
from mmctx.fusion import ConcatFusion, CrossAttentionFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.trainers import ClassificationTask, LayerPruning
from mmctx.types import ModalityInput, MultimodalBatch


def tiny_model() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(
        {"image": TimmImageEncoder("resnet10t", out_dim=16, stage=1),
         "audio": RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=16, num_layers=1, out_dim=16)},
        CrossAttentionFusion({"image": 16, "audio": 16}, 16, "audio", num_layers=1, num_heads=2, gated=False),
        ClassifierHead(16, num_classes=4, hidden_dim=16),
    ).eval()


def tiny_batch() -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6000, 4000, 3000, 6000])
    return MultimodalBatch({
        "image": ModalityInput(torch.rand(4, 3, 32, 32, generator=g), torch.tensor([True, False, True, True])),
        "audio": ModalityInput(torch.randn(4, 6000, generator=g) * 0.1, torch.arange(6000)[None] < lengths[:, None]),
    }, targets={"label": torch.tensor([0, 1, 2, 3])}, ids=["a", "b", "c", "d"])


def test_dynamic_int8_quantizes_linear_and_packed_gru_and_stays_close():
    model, b = tiny_model(), tiny_batch()
    with torch.no_grad():
        reference = model(b)
    q = quantize_dynamic_int8(model)
    quantized = quantized_modules(q)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert set(linears) | {"encoders.audio.rnn"} == set(quantized)  # every Linear (attention included) + the GRU
    assert isinstance(q.fusion.blocks[0].attn.q_proj, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(q.encoders.audio.rnn, torch.ao.nn.quantized.dynamic.GRU)
    assert q.fusion.blocks[0].attn.q_proj.weight().dtype == torch.qint8
    assert isinstance(model.head.mlp[0], nn.Linear)  # the original is untouched
    with torch.no_grad():
        out = q(b)  # the packed GRU runs quantized
    assert not torch.equal(out, reference)
    torch.testing.assert_close(out, reference, atol=0.05, rtol=0.0)
    assert model_size_bytes(q) < model_size_bytes(model)


def test_magnitude_pruning_reaches_the_sparsity_and_remove_makes_it_permanent():
    model = tiny_model()
    keys = set(model.state_dict())
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    prune_magnitude(model, 0.5)
    report = sparsity(model)
    assert report["total"] == pytest.approx(0.5, abs=1e-3)
    # global magnitude pruning: every removed weight is no larger than every kept one
    kept = torch.cat([m.weight[m.weight != 0].abs().flatten() for n, m in model.named_modules() if n in before])
    removed = torch.cat([before[n][m.weight == 0].abs().flatten() for n, m in model.named_modules() if n in before])
    assert removed.max() <= kept.min()
    assert any(k.endswith("weight_orig") for k in model.state_dict())

    done = make_pruning_permanent(model)
    assert len(done) == len(before)
    assert set(model.state_dict()) == keys  # no *_orig / *_mask left
    assert sparsity(model)["total"] == pytest.approx(0.5, abs=1e-3)
    assert all(isinstance(m.weight, nn.Parameter) for n, m in model.named_modules() if n in before)
    fresh = tiny_model()
    fresh.load_state_dict(model.state_dict())  # the pruned weights load into the plain architecture
    assert sparsity(fresh)["total"] == pytest.approx(0.5, abs=1e-3)



def test_sparsity_schedule_compounds_to_the_cubic_targets():
    schedule = SparsitySchedule(final_sparsity=0.5, start_epoch=1, end_epoch=3)
    assert schedule(0) == 0.0 and schedule(4) == 0.0
    remaining = 1.0
    for epoch in range(6):
        remaining *= 1.0 - schedule(epoch)
        assert 1.0 - remaining == pytest.approx(schedule.target(epoch))
    assert schedule.target(3) == pytest.approx(0.5)
    assert schedule.target(1) == pytest.approx(0.5 * (1 - (2 / 3) ** 3))
    with pytest.raises(ValueError, match="final_sparsity"):
        SparsitySchedule(final_sparsity=1.0, end_epoch=2)


def test_layer_pruning_callback_prunes_linear_and_conv_only_on_schedule(tmp_path):
    torch.manual_seed(0)
    model = FusionModel({"text": TextTransformerEncoder(vocab_size=20, dim=16, num_layers=1, num_heads=2)},
                        ConcatFusion({"text": 16}, 16), ClassifierHead(16, num_classes=3, hidden_dim=16))
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 5, dtype=torch.bool)
    batches = [MultimodalBatch({"text": ModalityInput(torch.randint(1, 20, (4, 5), generator=g), mask)},
                               targets={"label": torch.randint(0, 3, (4,), generator=g)}, ids=list("abcd"))
               for _ in range(2)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    keys = set(model.state_dict())
    norms = {n: p.detach().clone() for n, p in model.named_parameters() if "norm" in n}
    task = ClassificationTask(model, num_classes=3)
    callback = LayerPruning(amount=SparsitySchedule(0.5, start_epoch=0, end_epoch=1))
    trainer = L.Trainer(max_epochs=3, callbacks=[callback], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, loader)
    report = sparsity(model)
    assert report["total"] == pytest.approx(0.5, abs=2e-3)
    assert set(model.state_dict()) == keys  # made permanent at the end of training
    for name, p in model.named_parameters():  # LayerNorm weights are never pruned
        if name in norms:
            assert (p != 0).all(), name
    assert model.encoders.text.embed.weight.ne(0).all()  # nor embedding tables
    assert report["head.mlp.0.weight"] > 0 and report["encoders.text.encoder.blocks.0.attn.q_proj.weight"] > 0


def test_distillation_loss_is_re_exported_from_its_home_in_losses():
    import mmctx.losses

    assert distillation_loss is mmctx.losses.distillation_loss  # hand-computed test: tests/losses/test_distillation.py
