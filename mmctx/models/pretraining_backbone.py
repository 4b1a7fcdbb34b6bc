"""The encoders (and fusion) that pretraining trains and fine-tuning reuses."""

from __future__ import annotations

from torch import nn

__all__ = ["PretrainingBackbone"]


class PretrainingBackbone(nn.Module):
    """The part of a model that pretraining trains and fine-tuning reuses: one encoder per
    modality and (optionally) a fusion, stored under the same names as in
    :class:`~mmctx.models.FusionModel` (``encoders.<modality>``, ``fusion``), so a pretraining
    checkpoint's weights load into a classifier or captioner by submodule name.

    It has no ``forward``: :class:`~mmctx.trainers.PretrainingTask` calls the encoders and
    the fusion itself (each modality's ``encoders[m](data, mask) -> Tokens (B, N, D_m)``).
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module | None = None) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
