from __future__ import annotations

import pytest
import torch

from mmctx.context import ContextEncoder
from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder, TimmImageEncoder
from mmctx.fusion import ConcatFusion, CrossAttentionFusion, GatedFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.types import ModalityInput, MultimodalBatch


def tiny_encoders() -> dict:
    return {
        "text": TextTransformerEncoder(vocab_size=20, dim=16, num_layers=1, num_heads=2),
        "image": TimmImageEncoder("resnet10t", out_dim=16, stage=1),
        "audio": RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=8, num_layers=1, out_dim=16),
    }


def tiny_batch(b: int = 3) -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    text_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]).bool()[:b]
    audio_len = torch.tensor([4000, 3000, 2500])[:b]
    return MultimodalBatch(
        inputs={
            "text": ModalityInput(torch.randint(5, 20, (b, 6), generator=g) * text_mask, text_mask),
            "image": ModalityInput(torch.rand(b, 3, 32, 32, generator=g), torch.tensor([True, False, True])[:b]),
            "audio": ModalityInput(torch.randn(b, 4000, generator=g) * 0.1, torch.arange(4000)[None] < audio_len[:, None]),
        },
        targets={"label": torch.tensor([0, 1, 2])[:b]},
        ids=["a", "b", "c"][:b],
    )


FUSIONS = {
    "concat": lambda: ConcatFusion({"text": 16, "image": 16, "audio": 16}, 16),
    "cross": lambda: CrossAttentionFusion({"text": 16, "image": 16, "audio": 16}, 16, "text", num_heads=2),
    "gated": lambda: GatedFusion({"text": 16, "image": 16, "audio": 16}, 16),
}


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
@pytest.mark.parametrize("context_encoder", [False, True])
def test_end_to_end_logits_and_gradients(fusion, context_encoder):
    torch.manual_seed(0)
    model = FusionModel(
        tiny_encoders(),
        FUSIONS[fusion](),
        ClassifierHead(16, num_classes=3, pooling="attention", num_heads=2),
        ContextEncoder(16, num_layers=1, num_heads=2) if context_encoder else None,
    )
    batch = tiny_batch()
    logits = model(batch)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, batch.targets["label"]).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # gated cross-attention starts closed (tanh(0)=0), so only the gates get a gradient at step 0
    assert not no_grad, no_grad


def test_mismatched_widths_are_named():
    with pytest.raises(ValueError, match=r"encoders\['image'\].out_dim=16 but fusion.input_dims\['image'\]=32"):
        FusionModel(
            {"image": TimmImageEncoder("resnet10t", out_dim=16, stage=1)},
            ConcatFusion({"image": 32}, 16),
            ClassifierHead(16, num_classes=2),
        )
    with pytest.raises(ValueError, match="head.dim"):
        FusionModel({"image": TimmImageEncoder("resnet10t", out_dim=16, stage=1)}, ConcatFusion({"image": 16}, 16), ClassifierHead(8, 2))


def test_batch_modality_without_encoder_is_an_error_not_ignored():
    model = FusionModel(
        {"text": TextTransformerEncoder(vocab_size=20, dim=16, num_layers=1, num_heads=2)},
        ConcatFusion({"text": 16}, 16),
        ClassifierHead(16, num_classes=3),
    )
    with pytest.raises(ValueError, match=r"modalities \['image', 'audio'\]"):
        model(tiny_batch())


def test_subset_of_modalities_and_missing_sample():
    torch.manual_seed(0)
    model = FusionModel(tiny_encoders(), FUSIONS["concat"](), ClassifierHead(16, num_classes=3)).eval()
    batch = tiny_batch()
    only_audio = {"audio": batch.inputs["audio"]}
    assert model(only_audio).shape == (3, 3)
    # sample 1 has no image: replacing its (unused) pixels changes nothing
    other = tiny_batch()
    other.inputs["image"].data[1] = 123.0
    assert torch.allclose(model(batch), model(other), atol=1e-5)
