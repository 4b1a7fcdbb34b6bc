"""A timm CNN backbone whose feature map becomes a grid of image tokens."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from mmctx.encoders._checks import check_bool_mask
from mmctx.layers import sincos_2d
from mmctx.types import Tokens, check_shape

__all__ = ["TimmImageEncoder"]


class TimmImageEncoder(nn.Module):
    """Feature map of a timm backbone → ``h*w`` grid tokens with fixed 2-D sincos positions.

    The backbone is built with ``features_only=True, out_indices=(stage,)``; timm then
    keeps only the modules up to that stage, so an early stage is both a finer grid and
    a cheaper network (e.g. resnet18 at 64×64: stage -1 gives a 2×2 grid from 11.2 M
    parameters, stage 2 an 8×8 grid from 0.7 M).

    Only the images that are present are run through the backbone, so missing images cost
    nothing and never touch BatchNorm statistics; their token rows are zeros with an
    all-False mask. A batch with no image at all returns such rows directly, with the grid
    size the backbone would give for this input size (probed once per size, in eval mode,
    and cached).

    Weights are random unless ``pretrained_path`` names a LOCAL checkpoint (``.pth``,
    ``.bin`` or ``.safetensors`` state dict of the full timm model); timm loads it into the
    model before the feature wrapper is applied, adapting ``in_chans`` and dropping the
    classifier. Nothing is ever downloaded, and hub model names (``hf-hub:...``) are
    refused. Inputs are used as given: normalise them as the checkpoint expects.

    Args:
        backbone: a timm model name, e.g. ``"resnet18"`` or ``"resnet10t"``.
        out_dim: token width D (divisible by 4 for the 2-D positions).
        stage: index into the backbone's ``feature_info`` (negative counts from the end).
        pretrained_path: local weights file, or None for random initialisation.
        in_chans: number of image channels C.
        freeze: freeze the backbone (``requires_grad=False``) and keep it in eval mode
            (BatchNorm uses its running statistics); the projection stays trainable.
        norm_layer: the backbone's normalisation, a timm norm-layer name (None: the model's
            own, BatchNorm for ResNets). ``"groupnorm1"`` (one group: per-sample statistics)
            makes every sample's tokens independent of the rest of the batch — training
            under DDP then equals one process exactly without SyncBatchNorm (which needs
            GPUs), and tiny per-device batches stop hurting. Pretrained BatchNorm weights do
            not fit another norm layer.

    Attributes:
        out_dim: the token width D.
        num_features: channels of the chosen feature map.
        reduction: the feature map's stride relative to the input.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        out_dim: int = 128,
        stage: int = -1,
        pretrained_path: str | None = None,
        in_chans: int = 3,
        freeze: bool = False,
        norm_layer: str | None = None,
    ) -> None:
        super().__init__()
        import timm  # imported here so that `import mmctx.encoders` does not pay for timm

        if out_dim % 4 != 0:
            raise ValueError(f"TimmImageEncoder: out_dim must be divisible by 4 (2-D sincos positions), got {out_dim}")
        if backbone.split(":", 1)[0] in ("hf-hub", "hf_hub", "local-dir"):
            raise ValueError(
                f"TimmImageEncoder: backbone={backbone!r} names a hub/dir source; pass a plain timm model "
                "name and a local pretrained_path"
            )
        overlay = None
        if pretrained_path is not None:
            if not Path(pretrained_path).is_file():
                raise ValueError(f"TimmImageEncoder: pretrained_path={pretrained_path!r} is not a local file")
            # `file` is timm's local-weights source; clearing `source` keeps timm off the hub
            overlay = dict(file=str(pretrained_path), source=None)
        if norm_layer is not None:
            from timm.layers.create_norm import _NORM_MAP  # the names timm's get_norm_layer accepts

            if norm_layer.replace("_", "").lower() not in _NORM_MAP:
                raise ValueError(f"TimmImageEncoder: norm_layer={norm_layer!r} is not a timm norm layer; one of {sorted(_NORM_MAP)}")
        try:
            self.backbone = timm.create_model(
                backbone,
                pretrained=pretrained_path is not None,
                pretrained_cfg_overlay=overlay,
                features_only=True,
                out_indices=(stage,),
                in_chans=in_chans,
                **({} if norm_layer is None else {"norm_layer": norm_layer}),
            )
        except (AssertionError, IndexError) as err:
            raise ValueError(f"TimmImageEncoder: stage={stage} is not a feature stage of {backbone!r}: {err}") from err
        info = self.backbone.feature_info
        self.backbone_name = backbone
        self.stage = stage
        self.in_chans = in_chans
        self.num_features: int = info.channels()[-1]
        self.reduction: int = info.reduction()[-1]
        self.out_dim = out_dim
        self.freeze = freeze
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.proj = nn.Linear(self.num_features, out_dim)
        self._grid_cache: dict[tuple[int, int], tuple[int, int]] = {}

    def train(self, mode: bool = True) -> TimmImageEncoder:
        """Set training mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The feature-map size ``(h, w)`` the backbone gives for ``height × width`` inputs.

        Learned from real forwards, or probed once with one blank image in eval mode (so no
        BatchNorm statistic moves) and cached.
        """
        key = (height, width)
        if key not in self._grid_cache:
            param = next(self.backbone.parameters())
            probe = torch.zeros(1, self.in_chans, height, width, device=param.device, dtype=param.dtype)
            modes = [(m, m.training) for m in self.backbone.modules()]
            try:
                self.backbone.eval()
                with torch.no_grad():
                    feat = self.backbone(probe)[-1]  # (1, C, h, w)
            finally:
                for module, training in modes:
                    module.training = training
            self._grid_cache[key] = (feat.shape[-2], feat.shape[-1])
        return self._grid_cache[key]

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode the present images of a batch into grid tokens.

        Shapes:
            data: (B, C, H, W) float images; rows of missing images are ignored
            mask: (B,) bool, True if the sample has an image
            returns: Tokens with x (B, h*w, D) (row-major grid) and mask (B, h*w), True on
                every token of a present image; rows of missing images are zeros
        """
        check_shape("image data", data, ("B", self.in_chans, "H", "W"))
        check_shape("image mask", mask, (data.shape[0],))
        check_bool_mask("image mask", mask)
        if not data.is_floating_point():
            raise ValueError(f"image data: expected a floating-point tensor, got dtype {data.dtype}")
        B, _, H, W = data.shape
        present = mask.nonzero().squeeze(1)  # (P,) indices of present images
        if present.numel() == 0:
            h, w = self.grid_size(H, W)
            x = data.new_zeros(B, h * w, self.out_dim)
            return Tokens(x, mask[:, None].expand(B, h * w).contiguous())
        feat = self.backbone(data.index_select(0, present))[-1]  # (P, C_f, h, w)
        h, w = feat.shape[-2:]
        self._grid_cache[(H, W)] = (h, w)
        tokens = self.proj(feat.flatten(2).transpose(1, 2))  # (P, h*w, D)
        tokens = tokens + sincos_2d(h, w, self.out_dim, device=tokens.device).to(tokens.dtype)  # (P, h*w, D)
        x = tokens.new_zeros(B, h * w, self.out_dim).index_copy(0, present, tokens)  # (B, h*w, D)
        return Tokens(x, mask[:, None].expand(B, h * w).contiguous())

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, stage={self.stage}, out_dim={self.out_dim}, "
            f"reduction={self.reduction}, freeze={self.freeze}"
        )
