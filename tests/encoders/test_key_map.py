"""map_state_dict_by_order: renames by position, refuses any disagreement in count or shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmctx.encoders import map_state_dict_by_order


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_renames_by_order_and_reports_pairs() -> None:
    source = {f"other.{i}": v.clone() + 1 for i, (k, v) in enumerate(_model().state_dict().items())}
    model = _model()
    mapped, report = map_state_dict_by_order(source, model.state_dict())
    model.load_state_dict(mapped)
    assert [d for _, d, _ in report] == list(model.state_dict())
    assert report[0] == ("other.0", "0.weight", (4, 3, 3, 3))
    for (s, d, _), value in zip(report, source.values()):
        assert torch.equal(model.state_dict()[d], value)


def test_shape_mismatch_lists_keys_and_shapes() -> None:
    source = dict(_model().state_dict())
    source["3.weight"] = torch.zeros(5, 4)
    with pytest.raises(ValueError, match=r"(?s)1 pairs differ in shape.*#\d+: 3\.weight \(5, 4\) -> 3\.weight \(2, 4\)"):
        map_state_dict_by_order(source, _model().state_dict())


def test_count_mismatch_lists_the_extra_tensors() -> None:
    source = dict(_model().state_dict())
    source["extra.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"(?s)10 tensors in the file, 9 in the model.*only in the file: extra\.bias \(3,\)"):
        map_state_dict_by_order(source, _model().state_dict())
