"""PretrainingBackbone stores its encoders and fusion under FusionModel's names."""

from __future__ import annotations

from mmctx.encoders import TextTransformerEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel, PretrainingBackbone


def test_state_dict_names_are_those_of_a_fusion_model():
    encoders = {"text": TextTransformerEncoder(vocab_size=20, dim=8, num_layers=1, num_heads=2)}
    backbone = PretrainingBackbone(encoders, ConcatFusion({"text": 8}, 8))
    model = FusionModel(encoders, ConcatFusion({"text": 8}, 8), ClassifierHead(8, num_classes=3))
    ours = set(backbone.state_dict())
    assert ours and ours == {k for k in model.state_dict() if not k.startswith("head.")}
    assert PretrainingBackbone(encoders).fusion is None
