"""Any ``transformers`` vision backbone (ViT, CLIP/SigLIP vision tower, ConvNeXt, ...) → image tokens."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmctx.encoders._checks import check_bool_mask
from mmctx.encoders._finetune import check_finetune_args
from mmctx.encoders.hf._load import load_backbone, load_processor
from mmctx.encoders.preprocessing import hf_image_preprocessing
from mmctx.encoders.hf._tower import HFTower
from mmctx.types import Tokens, check_shape

__all__ = ["HFVisionEncoder"]


class HFVisionEncoder(HFTower):
    """Wrap a Hugging Face vision backbone (``AutoModel``) as an mmctx image encoder.

    The tokens are the backbone's ``last_hidden_state``: for a vision transformer the patch
    tokens in row-major order, preceded by the class token where the model has one
    (ViT, CLIP: ``1 + (H/p)·(W/p)`` tokens; SigLIP: ``(H/p)·(W/p)``), with the model's own
    position embeddings; for a CNN (ConvNeXt, ResNet) the cells of the last feature map,
    row-major (``(H/32)·(W/32)``). Optionally projected to ``out_dim``. A dual-tower
    checkpoint (CLIP, SigLIP) gives its vision tower only.

    Only the images that are present are run; rows of missing images are zeros with an
    all-False mask. A batch with no image returns such rows with the token count the
    backbone gives at that size (probed once per size, in eval mode, and cached).

    Inputs are used as given: :attr:`preprocessing` says how the model expects images
    (size, mean/std, interpolation, crop), read from its ``AutoImageProcessor`` (or, for a
    config or a folder without one, the defaults of the model type's processor at the
    config's ``image_size``). A vision transformer reads only its own image size unless
    ``interpolate_pos_encoding=True``.

    Args:
        model: a hub id (``"google/vit-base-patch16-224"``, ``"openai/clip-vit-base-patch32"``,
            ``"facebook/convnext-tiny-224"``) or a local ``save_pretrained`` folder.
        config: config fields of a fresh model, including ``"model_type"``
            (``"vit"``, ``"clip_vision_model"``, ``"siglip_vision_model"``, ``"convnext"``, ...).
        out_dim: width of a Linear projection of the tokens; None keeps the backbone's width.
        freeze: freeze the backbone and keep it in eval mode; the projection stays trainable.
        train_last_layers: train only the last K layers (stages of a CNN) and the norm
            after them; the rest is frozen and in eval mode.
        trainable: train only the backbone parameters matching these ``fnmatch`` patterns.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        interpolate_pos_encoding: let a vision transformer read other image sizes by
            interpolating its position embeddings (ViT, CLIP, SigLIP).
        revision: a hub revision (branch, tag or commit) to pin.

    Attributes:
        out_dim: the token width D.
        preprocessing: the image preprocessing the model expects (see
            :mod:`mmctx.encoders.preprocessing`).
        unused_parameters: backbone parameters frozen because the tokens never use them
            (poolers, CLIP's ``post_layernorm``, ...).
    """

    def __init__(
        self,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        out_dim: int | None = None,
        freeze: bool = False,
        train_last_layers: int | None = None,
        trainable: list[str] | None = None,
        gradient_checkpointing: bool = False,
        interpolate_pos_encoding: bool = False,
        revision: str | None = None,
    ) -> None:
        super().__init__()
        owner = "HFVisionEncoder"
        check_finetune_args(owner, freeze, train_last_layers, trainable)
        self.backbone = load_backbone(owner, model, config, revision, vision=True)
        self.model_name = model
        hf_config = self.backbone.config
        hidden = getattr(hf_config, "hidden_size", None)
        if not isinstance(hidden, int):
            sizes = getattr(hf_config, "hidden_sizes", None)
            hidden = sizes[-1] if sizes else None
        if not isinstance(hidden, int):
            raise ValueError(f"{owner}: the backbone config ({type(hf_config).__name__}) has no hidden_size(s)")
        self.in_chans: int = getattr(hf_config, "num_channels", 3)
        self.interpolate_pos_encoding = interpolate_pos_encoding
        processor = load_processor(model, revision, "AutoImageProcessor") or _default_processor(hf_config)
        self.preprocessing: dict = hf_image_preprocessing(processor)
        self._count_cache: dict[tuple[int, int], int] = {}

        def probe() -> Tensor:
            return self._tokens(torch.zeros(1, self.in_chans, *self.preprocessing["image_size"]))

        self._finish_backbone(owner, probe, hidden, out_dim, freeze, train_last_layers, trainable, gradient_checkpointing)

    def _tokens(self, pixels: Tensor) -> Tensor:
        """The backbone's tokens.

        Shapes:
            pixels: (P, C, H, W) → (P, N, hidden)
        """
        inputs: dict[str, Any] = {"pixel_values": pixels}
        if self.interpolate_pos_encoding:
            inputs["interpolate_pos_encoding"] = True
        hidden = self.backbone(**inputs).last_hidden_state
        if hidden.dim() == 4:  # a CNN's feature map (P, C, h, w) → grid tokens
            hidden = hidden.flatten(2).transpose(1, 2)  # (P, h*w, C)
        return hidden

    def num_tokens(self, height: int, width: int) -> int:
        """The number of tokens N for ``height × width`` images (probed once in eval mode, cached)."""
        key = (height, width)
        if key not in self._count_cache:
            param = next(self.backbone.parameters())
            probe = torch.zeros(1, self.in_chans, height, width, device=param.device, dtype=param.dtype)
            modes = [(m, m.training) for m in self.backbone.modules()]
            try:
                self.backbone.eval()
                with torch.no_grad():
                    self._count_cache[key] = self._tokens(probe).shape[1]
            finally:
                for module, training in modes:
                    module.training = training
        return self._count_cache[key]

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode the present images of a batch.

        Shapes:
            data: (B, C, H, W) float images, preprocessed as :attr:`preprocessing` says;
                rows of missing images are ignored
            mask: (B,) bool, True if the sample has an image
            returns: Tokens with x (B, N, D) and mask (B, N), True on every token of a
                present image; rows of missing images are zeros
        """
        check_shape("image data", data, ("B", self.in_chans, "H", "W"))
        check_shape("image mask", mask, (data.shape[0],))
        check_bool_mask("image mask", mask)
        if not data.is_floating_point():
            raise ValueError(f"image data: expected a floating-point tensor, got dtype {data.dtype}")
        B, _, H, W = data.shape
        present = mask.nonzero().squeeze(1)  # (P,)
        if present.numel() == 0:
            n = self.num_tokens(H, W)
            return Tokens(data.new_zeros(B, n, self.out_dim), mask[:, None].expand(B, n).contiguous())
        hidden = self._tokens(data.index_select(0, present))  # (P, N, hidden)
        self._count_cache[(H, W)] = hidden.shape[1]
        tokens = self.proj(hidden) if self.proj is not None else hidden  # (P, N, D)
        n = tokens.shape[1]
        x = tokens.new_zeros(B, n, self.out_dim).index_copy(0, present, tokens)  # (B, N, D)
        return Tokens(x, mask[:, None].expand(B, n).contiguous())

    def extra_repr(self) -> str:
        return f"model={self.model_name!r}, out_dim={self.out_dim}, freeze={self.freeze}"


def _default_processor(hf_config: Any) -> Any:
    """The image processor of the config's model type with its defaults, sized to ``image_size``."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    model_type = hf_config.model_type.removesuffix("_vision_model")
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    if not names:
        raise ValueError(f"HFVisionEncoder: no image processor is known for model type {hf_config.model_type!r}")
    if isinstance(names, dict):  # transformers >= 5: {"torchvision": ..., "pil": ...}
        names = (names.get("pil"), names.get("torchvision"))
    names = (names,) if isinstance(names, str) else tuple(names)
    found = [n for n in names if n is not None and hasattr(transformers, n)]
    if not found:
        raise ValueError(f"HFVisionEncoder: no image processor class found for model type {hf_config.model_type!r}")
    name = found[-1]  # the torchvision ("fast") one when there is one
    processor = getattr(transformers, name)()
    side = getattr(hf_config, "image_size", None)
    if isinstance(side, int):
        size = dict(processor.size)
        if "height" in size:
            processor.size = {"height": side, "width": side}
        elif "shortest_edge" in size:
            processor.size = {"shortest_edge": side}
            if getattr(processor, "crop_size", None):
                processor.crop_size = {"height": side, "width": side}
    return processor
