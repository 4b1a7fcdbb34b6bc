"""TimmImageEncoder specifics: stages, local weights only, freezing, BatchNorm isolation."""

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
    with pytest.raises(ValueError, match="hub"):
        _encoder(backbone="hf-hub:timm/resnet10t.c3_in1k")
    with pytest.raises(ValueError, match="pretrained_path"):
        _encoder(pretrained_path=str(tmp_path / "absent.pth"))


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
    enc = _encoder(pretrained_path=str(path))
    expected = full.state_dict()
    for name, value in enc.backbone.state_dict().items():
        assert torch.equal(value, expected[name]), name
    gray = _encoder(pretrained_path=str(path), in_chans=1)  # timm folds the RGB stem into one channel
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
