"""TimmImageEncoder specifics: stages, weight sources, key mapping, preprocessing, freezing, BatchNorm isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from mmctx.encoders import TimmImageEncoder


def _encoder(**overrides: object) -> TimmImageEncoder:
    torch.manual_seed(0)
    args: dict = dict(backbone="resnet10t", out_dim=16, stage=2)
    args.update(overrides)
    return TimmImageEncoder(**args)


def _running_means(module: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_stage_sets_grid_and_truncates_backbone() -> None:
    early, last = _encoder(stage=2), _encoder(stage=-1)
    assert early.reduction == 8 and last.reduction == 32
    assert _encoder(stage=-3).num_features == early.num_features
    assert sum(p.numel() for p in early.parameters()) < sum(p.numel() for p in last.parameters()) / 5
    images, present = torch.rand(2, 3, 64, 64), torch.ones(2, dtype=torch.bool)
    assert early.eval()(images, present).x.shape == (2, 64, 16)  # 8×8 grid
    assert last.eval()(images, present).x.shape == (2, 4, 16)  # 2×2 grid


@pytest.mark.parametrize(
    ("data", "mask", "match"),
    [
        (torch.rand(2, 1, 32, 32), torch.ones(2, dtype=torch.bool), "image data"),
        (torch.rand(2, 32, 32), torch.ones(2, dtype=torch.bool), "image data"),
        (torch.rand(2, 3, 32, 32), torch.ones(3, dtype=torch.bool), "image mask"),
        (torch.rand(2, 3, 32, 32), torch.ones(2, 1, dtype=torch.bool), "image mask"),
        (torch.rand(2, 3, 32, 32), torch.ones(2), "image mask.*bool"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.ones(2, dtype=torch.bool), "image data.*floating"),
    ],
)
def test_bad_inputs_raise(data: torch.Tensor, mask: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _encoder()(data, mask)


def test_bad_constructor_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out_dim"):
        _encoder(out_dim=18)
    with pytest.raises(ValueError, match="stage=9"):
        _encoder(stage=9)
    with pytest.raises(ValueError, match="pretrained_path"):
        _encoder(pretrained_path=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="not a local file"):
        _encoder(pretrained=str(tmp_path / "absent.safetensors"))
    with pytest.raises(ValueError, match="key_map"):
        _encoder(key_map="by_name")
    with pytest.raises(ValueError, match="needs pretrained=<a local weights file>"):
        _encoder(key_map="by_order")
    with pytest.raises(ValueError, match="at most one of"):
        _encoder(freeze=True, trainable=["layer4.*"])


@pytest.mark.usefixtures("hub_offline")
@pytest.mark.parametrize(
    "args",
    [dict(pretrained=True), dict(pretrained="timm/resnet10t.made_up_tag"), dict(backbone="hf-hub:mmctx-test/no-such-model")],
)
def test_hub_weights_offline_fail_with_a_fix(args: dict, no_network: list) -> None:
    with pytest.raises(OSError, match=r"(?s)cannot load.*HF_HUB_OFFLINE.*local path"):
        _encoder(**args)
    assert no_network == [], "offline mode must not even try the network"


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_loads_local_weights(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(1)
    full = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / f"weights.{suffix}"
    if suffix == "pth":
        torch.save(full.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(full.state_dict(), str(path))
    enc = _encoder(pretrained=str(path))
    assert torch.equal(_encoder(pretrained_path=str(path)).backbone.conv1[0].weight, full.conv1[0].weight)  # old name
    expected = full.state_dict()
    for name, value in enc.backbone.state_dict().items():
        assert torch.equal(value, expected[name]), name
    gray = _encoder(pretrained=str(path), in_chans=1)  # timm folds the RGB stem into one channel
    assert gray.eval()(torch.rand(2, 1, 32, 32), torch.ones(2, dtype=torch.bool)).x.shape == (2, 16, 16)


def test_freeze_keeps_backbone_fixed() -> None:
    enc = _encoder(freeze=True)
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    assert {n for n, p in enc.named_parameters() if p.requires_grad} == {"proj.weight", "proj.bias"}
    enc.train()
    assert enc.training and not enc.backbone.training
    before = _running_means(enc)
    enc(torch.rand(3, 3, 32, 32), torch.ones(3, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(before, _running_means(enc)))


def test_missing_images_never_reach_batchnorm() -> None:
    images = torch.rand(4, 3, 32, 32)
    present = torch.tensor([True, False, True, False])
    garbage = images.clone()
    garbage[~present] = float("nan")
    with_missing, only_present = _encoder().train(), _encoder().train()
    with_missing(garbage, present)
    only_present(images[present], torch.ones(2, dtype=torch.bool))
    for a, b in zip(_running_means(with_missing), _running_means(only_present)):
        torch.testing.assert_close(a, b)


def test_batch_without_images_keeps_shape_and_statistics() -> None:
    enc = _encoder().train()
    before = _running_means(enc)
    out = enc(torch.rand(2, 3, 48, 40), torch.zeros(2, dtype=torch.bool))
    assert out.x.shape == (2, 6 * 5, 16) and not out.mask.any() and (out.x == 0).all()
    assert all(torch.equal(a, b) for a, b in zip(before, _running_means(enc)))
    assert enc.training and all(m.training for m in enc.backbone.modules())
    real = enc(torch.rand(2, 3, 48, 40), torch.ones(2, dtype=torch.bool))
    assert real.x.shape == out.x.shape


def test_groupnorm1_makes_each_sample_independent_of_the_batch() -> None:
    """With BatchNorm (training mode) a sample's tokens depend on its batch mates; with
    norm_layer="groupnorm1" they do not — what makes DDP equal one process without SyncBatchNorm."""
    images = torch.rand(4, 3, 32, 32)
    present = torch.ones(4, dtype=torch.bool)
    for norm, independent in ((None, False), ("groupnorm1", True)):
        encoder = _encoder(norm_layer=norm).train()
        whole = encoder(images, present).x[:2]
        half = encoder(images[:2], present[:2]).x
        assert torch.allclose(whole, half, atol=1e-6) == independent, norm
    assert not _running_means(_encoder(norm_layer="groupnorm1"))  # no BatchNorm left
    with pytest.raises(ValueError, match=r"norm_layer='groupnorm7' is not a timm norm layer; one of \[.*'groupnorm1'"):
        _encoder(norm_layer="groupnorm7")


def _renamed_state_dict(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """resnet10t's weights under other names, in the same order (another implementation)."""
    torch.manual_seed(2)
    full = timm.create_model("resnet10t", pretrained=False)
    renamed = {f"net.p{i}.{name.rsplit('.', 1)[-1]}": v for i, (name, v) in enumerate(full.state_dict().items())}
    path = tmp_path / "other.pth"
    torch.save(renamed, path)
    return path, full.state_dict()


def test_key_map_by_order_loads_another_implementation(tmp_path: Path) -> None:
    path, expected = _renamed_state_dict(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)do not fit timm's 'resnet10t'.*missing in the file: conv1\.0\.weight.*key_map='by_order'"):
        _encoder(pretrained=str(path))  # timm alone would load nothing into a feature model, silently
    enc = _encoder(pretrained=str(path), key_map="by_order")
    assert enc.key_map_report[0] == ("net.p0.weight", "conv1.0.weight", (24, 3, 3, 3))
    assert len(enc.key_map_report) == len(expected)
    for name, value in enc.backbone.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_key_map_by_order_refuses_another_architecture(tmp_path: Path) -> None:
    path, _ = _renamed_state_dict(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)by order and shape.*tensors in the file.*differ in shape"):
        TimmImageEncoder("resnet18", out_dim=16, pretrained=str(path), key_map="by_order")


def test_weights_are_read_without_unpickling_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.0.weight": torch.zeros(1), "hook": _NotAllowed()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global|not an allowed global"):
        _encoder(pretrained=str(path))


class _NotAllowed:
    """An object torch.load(weights_only=True) must refuse to rebuild."""


def test_preprocessing_comes_from_timm_pretrained_config() -> None:
    from timm.data import resolve_model_data_config

    enc = _encoder(backbone="efficientnet_lite0", stage=-1)
    config = resolve_model_data_config(timm.create_model("efficientnet_lite0"))
    assert enc.preprocessing == {
        "image_size": (224, 224), "mean": tuple(config["mean"]), "std": tuple(config["std"]),
        "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
    }
    assert _encoder().preprocessing["image_size"] == (176, 176)  # resnet10t's own pretrained size


def test_partial_fine_tuning_trains_only_what_it_says() -> None:
    enc = _encoder(backbone="efficientnet_lite0", stage=-1, train_last_layers=1)
    trainable = {n for n, p in enc.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.6.", "conv_head", "bn2")) for n in trainable)
    pattern = _encoder(trainable=["layer2.*"])
    assert {n.split(".")[0] for n, p in pattern.backbone.named_parameters() if p.requires_grad} == {"layer2"}
    pattern.train()
    assert pattern.backbone.layer2.training and not pattern.backbone.layer1.training  # frozen parts: eval
    before = {n: p.detach().clone() for n, p in pattern.named_parameters()}
    optimizer = torch.optim.SGD([p for p in pattern.parameters() if p.requires_grad], lr=0.1)
    pattern(torch.rand(2, 3, 32, 32), torch.ones(2, dtype=torch.bool)).x.square().sum().backward()
    optimizer.step()
    changed = {n.split(".")[0] if n.startswith("proj") else n.split(".")[1] for n, p in pattern.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"proj", "layer2"}
    with pytest.raises(ValueError, match="matches no parameter"):
        _encoder(trainable=["no_such_layer.*"])


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    images, present = torch.rand(2, 3, 32, 32), torch.ones(2, dtype=torch.bool)
    grads = []
    for checkpointing in (False, True):
        enc = _encoder(backbone="efficientnet_lite0", stage=-1, gradient_checkpointing=checkpointing).train()
        enc(images, present).x.sum().backward()
        grads.append(enc.backbone.conv_stem.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_channels_last_gives_the_same_tokens_and_gradients() -> None:
    images, present = torch.rand(3, 3, 32, 32), torch.tensor([True, False, True])
    outs, grads = [], []
    for channels_last in (False, True):
        enc = _encoder(channels_last=channels_last).train()
        assert enc.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        out = enc(images, present)
        out.x.pow(2).sum().backward()
        outs.append(out.x.detach())
        grads.append(enc.backbone.conv1[0].weight.grad.contiguous())
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-3)


def test_backbone_args_reach_the_timm_constructor() -> None:
    full = TimmImageEncoder("resnet10t", out_dim=16, stage=3)
    half = TimmImageEncoder("resnet10t", out_dim=16, stage=3, backbone_args={"channels": [32, 64, 128, 256], "stem_width": 16})
    assert half.num_features == 128 and full.num_features == 256
    assert half.grid_size(64, 64) == full.grid_size(64, 64) == (4, 4)  # same stride, a quarter of the weights
    n_half, n_full = (sum(p.numel() for p in e.backbone.parameters()) for e in (half, full))
    assert n_half < n_full / 3.5
    out = half(torch.randn(2, 3, 64, 64), torch.ones(2, dtype=torch.bool))
    assert out.x.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="backbone_args=.*bogus"):
        TimmImageEncoder("resnet10t", out_dim=16, stage=3, backbone_args={"bogus": 1})
    with pytest.raises(ValueError, match="may not set.*in_chans"):
        TimmImageEncoder("resnet10t", out_dim=16, stage=3, backbone_args={"in_chans": 1})
