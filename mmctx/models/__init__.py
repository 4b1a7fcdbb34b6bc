"""Compositions of encoders, fusion, context encoder and head (plain nn.Modules)."""

from mmctx.models.encoder_decoder import EncoderDecoderModel
from mmctx.models.fusion_model import FusionModel
from mmctx.models.pretraining_backbone import PretrainingBackbone

__all__ = ["FusionModel", "EncoderDecoderModel", "PretrainingBackbone"]
