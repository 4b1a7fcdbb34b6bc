"""FusionModel: encoders + fusion (+ context encoder) + head, end to end: logits, gradients,
width checks, missing modalities."""

from __future__ import annotations

import pytest
import torch

from mmctx.context import ContextEncoder
from mmctx.encoders import RNNAudioEncoder, TextTransformerEncoder, TimmImageEncoder
from mmctx.fusion import ConcatFusion, CrossAttentionFusion, GatedFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel
from mmctx.types import ModalityInput, MultimodalBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encoders() -> dict:
    return {
        "text": TextTransformerEncoder(vocab_size=20, dim=16, num_layers=1, num_heads=2),
        "image": TimmImageEncoder("resnet10t", out_dim=16, stage=1),
        "audio": RNNAudioEncoder(n_mels=16, conv_channels=4, hidden_dim=8, num_layers=1, out_dim=16),
    }


def tiny_batch(b: int = 3, dtype: torch.dtype = torch.float32) -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    text_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]).bool()[:b]
    audio_len = torch.tensor([4000, 3000, 2500])[:b]
    return MultimodalBatch(
        inputs={
            "text": ModalityInput(torch.randint(5, 20, (b, 6), generator=g) * text_mask, text_mask),
            "image": ModalityInput(
                torch.rand(b, 3, 32, 32, generator=g, dtype=dtype), torch.tensor([True, False, True])[:b]
            ),
            "audio": ModalityInput(
                torch.randn(b, 4000, generator=g, dtype=dtype) * 0.1, torch.arange(4000)[None] < audio_len[:, None]
            ),
        },
        targets={"label": torch.tensor([0, 1, 2])[:b]},
        ids=["a", "b", "c"][:b],
    )


FUSIONS = {
    "concat": lambda: ConcatFusion({"text": 16, "image": 16, "audio": 16}, 16),
    "cross": lambda: CrossAttentionFusion({"text": 16, "image": 16, "audio": 16}, 16, "text", num_heads=2),
    "gated": lambda: GatedFusion({"text": 16, "image": 16, "audio": 16}, 16),
}


def open_step_zero_blocks(model: torch.nn.Module) -> None:
    """Give a value to the parameters that block a branch's gradient at step 0 only: the gated
    cross-attention's tanh gates (0: closed) and timm's zero-initialised last BatchNorm scale
    of each residual branch."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.fill_(0.5)
            elif name.endswith("weight") and (p == 0).all():
                p.fill_(1.0)


#: Parameters that cannot get a gradient by construction, per fusion: pattern → why.
DEAD_PARAMETERS: dict[str, dict[str, str]] = {
    "gated": {
        # GatedFusion's context is one token: the context encoder's self-attention and the
        # head's attention pooling each attend over a single key, whose softmax weight is 1
        # whatever the query
        "context_encoder.*.attn.q_proj.*": "attention over a one-token context ignores its queries",
        "head.attn.q_proj.*": "attention over a one-token context ignores its queries",
        "head.query": "attention over a one-token context ignores its queries",
    },
}


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
@pytest.mark.parametrize("context_encoder", [False, True])
def test_end_to_end_logits_and_gradients(fusion, context_encoder, assert_gradients):
    dead = {k: v for k, v in DEAD_PARAMETERS.get(fusion, {}).items() if context_encoder or "context_encoder" not in k}
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
    open_step_zero_blocks(model)
    model.double()
    logits = model(tiny_batch(dtype=torch.float64))
    torch.nn.functional.cross_entropy(logits, batch.targets["label"]).backward()
    assert_gradients(model, dead)


def test_closed_cross_attention_gates_are_what_gets_the_gradient_at_step_zero():
    """tanh(0) = 0 closes the gated branches: at step 0 their gates get a gradient (so training
    opens them) and nothing behind a gate does."""
    torch.manual_seed(0)
    model = FusionModel(tiny_encoders(), FUSIONS["cross"](), ClassifierHead(16, num_classes=3))
    batch = tiny_batch()
    torch.nn.functional.cross_entropy(model(batch), batch.targets["label"]).backward()
    fusion = dict(model.fusion.named_parameters())
    gates = {n for n in fusion if n.endswith("_gate")}
    assert gates and all(fusion[n].grad.abs().item() > 1e-6 for n in gates)
    # the blocks' attention and feed-forward, and the projections of the modalities they read
    behind = [n for n in fusion if n.startswith(("blocks.", "proj.image", "proj.audio")) and n not in gates]
    leaked = [n for n in behind if fusion[n].grad is not None and fusion[n].grad.any()]
    assert behind and not leaked, leaked


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
