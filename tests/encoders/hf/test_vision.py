"""HFVisionEncoder: every family random-init, tokens, preprocessing from the processor, freezing, partial fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmctx.encoders import HFVisionEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(config: dict, **overrides: object) -> HFVisionEncoder:
    torch.manual_seed(0)
    return HFVisionEncoder(config=config, **overrides)


@pytest.mark.parametrize(
    ("family", "tokens", "backbone"),
    [
        ("vit", 1 + 16, "ViTModel"),  # CLS + (32/8)^2 patches
        ("clip", 1 + 16, "CLIPVisionModel"),
        ("siglip", 16, "SiglipVisionModel"),
        ("convnext", 16, "ConvNextModel"),  # (32 / 4 / 2)^2 cells: stem stride 4, one downsampling stage
    ],
)
def test_every_family_gives_tokens(tiny: dict, family: str, tokens: int, backbone: str) -> None:
    enc = _encoder(tiny[family], out_dim=8).eval()
    assert type(enc.backbone).__name__ == backbone
    out = enc(torch.rand(3, 3, 32, 32), torch.tensor([True, False, True]))
    assert out.x.shape == (3, tokens, 8) and enc.num_tokens(32, 32) == tokens
    assert out.mask.tolist() == [[True] * tokens, [False] * tokens, [True] * tokens]
    assert (out.x[1] == 0).all()
    assert next(enc.parameters()).dtype == torch.float32
    assert _encoder(tiny[family]).out_dim == enc.hidden_size  # no projection


def test_unused_heads_are_frozen(tiny: dict) -> None:
    assert _encoder(tiny["vit"]).unused_parameters == ["pooler.dense.weight", "pooler.dense.bias"]
    assert _encoder(tiny["clip"]).unused_parameters == ["post_layernorm.weight", "post_layernorm.bias"]
    assert all(n.startswith("head.") for n in _encoder(tiny["siglip"]).unused_parameters)


def test_bad_arguments_raise(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of model"):
        HFVisionEncoder()
    with pytest.raises(ValueError, match="not a local folder"):
        HFVisionEncoder(model=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="image data"):
        _encoder(tiny["vit"])(torch.rand(2, 1, 32, 32), torch.ones(2, dtype=torch.bool))


def test_interpolate_pos_encoding_reads_other_sizes(tiny: dict) -> None:
    images, present = torch.rand(2, 3, 48, 48), torch.ones(2, dtype=torch.bool)
    with pytest.raises(ValueError):
        _encoder(tiny["vit"]).eval()(images, present)
    out = _encoder(tiny["vit"], interpolate_pos_encoding=True).eval()(images, present)
    assert out.x.shape == (2, 1 + 36, 16)


def test_clip_checkpoint_gives_its_vision_tower(tiny: dict, tmp_path: Path) -> None:
    """A dual-tower folder (CLIPModel + its processor) loads as the vision tower, preprocessing from the folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vision = {k: v for k, v in tiny["clip"].items() if k != "model_type"}
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=8))
    clip.save_pretrained(tmp_path)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path)
    enc = HFVisionEncoder(model=str(tmp_path)).eval()
    assert type(enc.backbone).__name__ == "CLIPVisionModel"
    assert enc.preprocessing["image_size"] == (32, 32) and enc.preprocessing["crop_mode"] == "center"
    assert enc.preprocessing["mean"] == tuple(processor.image_mean)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = clip.vision_model(pixel_values=images).last_hidden_state
    torch.testing.assert_close(enc(images, torch.ones(2, dtype=torch.bool)).x, expected)


def _step(enc: HFVisionEncoder) -> dict[str, bool]:
    """One SGD step; which parameters changed."""
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    trainable = [p for p in enc.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    enc.train()(torch.rand(2, 3, 32, 32), torch.ones(2, dtype=torch.bool)).x.square().sum().backward()
    optimizer.step()
    return {n: not torch.equal(p, before[n]) for n, p in enc.named_parameters()}


def test_freeze_keeps_weights_and_eval_mode(tiny: dict) -> None:
    enc = _encoder(tiny["vit"], out_dim=8, freeze=True)
    changed = _step(enc)
    assert enc.training and not enc.backbone.training
    assert not any(m.training for m in enc.backbone.modules())
    assert {n for n, c in changed.items() if c} == {"proj.weight", "proj.bias"}


@pytest.mark.parametrize("family", ["vit", "clip", "convnext"])
def test_train_last_layers(tiny: dict, family: str) -> None:
    from mmctx.encoders._finetune import find_layer_list

    enc = _encoder(tiny[family], out_dim=8, train_last_layers=1)
    list_name, layers = find_layer_list("test", enc.backbone)
    assert list_name.rsplit(".", 1)[-1] in {"layer", "layers", "stages"} and len(layers) == 2
    names = [n for n, _ in enc.backbone.named_parameters()]
    last_layer = {n for n in names if n.startswith(f"{list_name}.1.")}
    after = set(names[max(names.index(n) for n in last_layer) + 1 :]) - set(enc.unused_parameters)
    trainable = {n.removeprefix("backbone.") for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == last_layer | after | {"proj.weight", "proj.bias"}
    changed = {n.removeprefix("backbone.") for n, c in _step(enc).items() if c}
    # ConvNeXt's layer scale (1e-6 at init) makes some updates vanish in float32: all got a gradient
    assert changed <= trainable and changed & last_layer
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    assert enc.training and not layers[0].training and layers[1].training  # the frozen part stays in eval mode


def test_trainable_patterns(tiny: dict) -> None:
    enc = _encoder(tiny["vit"])
    prefix = next(n for n, _ in enc.backbone.named_parameters() if ".0.attention." in n).split(".0.attention.")[0]
    enc = _encoder(tiny["vit"], trainable=[f"{prefix}.0.attention.*"])
    changed = {n for n, c in _step(enc).items() if c}
    assert changed and all(n.startswith(f"backbone.{prefix}.0.attention.") for n in changed)
    with pytest.raises(ValueError, match="matches no parameter"):
        _encoder(tiny["vit"], trainable=["nothing.*"])
    with pytest.raises(ValueError, match="train_last_layers=5 but .* has 2 layers"):
        _encoder(tiny["vit"], train_last_layers=5)


def test_gradient_checkpointing(tiny: dict) -> None:
    images, present = torch.rand(2, 3, 32, 32), torch.ones(2, dtype=torch.bool)
    grads = []
    for checkpointing in (False, True):
        enc = _encoder(tiny["vit"], gradient_checkpointing=checkpointing).train()
        enc(images, present).x.sum().backward()
        assert any(getattr(m, "gradient_checkpointing", False) for m in enc.backbone.modules()) == checkpointing
        grads.append(enc.backbone.embeddings.patch_embeddings.projection.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])
