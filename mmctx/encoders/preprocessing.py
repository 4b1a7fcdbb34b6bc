"""The image preprocessing a pretrained tower expects, as a plain dict, and a transform that applies it.

Every image encoder exposes ``preprocessing``: a dict in timm's vocabulary, read from the
model's own pretrained config (timm's ``resolve_model_data_config``, or the
``AutoImageProcessor`` settings of a ``transformers`` model), so that a data module and a
checkpoint can record and apply it::

    {"image_size": (224, 224),               # final (H, W) fed to the model
     "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),   # after scaling to [0, 1]
     "interpolation": "bicubic",             # of the resize
     "crop_pct": 0.875,                      # resize to image_size / crop_pct, then crop image_size
     "crop_mode": "center"}                  # "center": keep the aspect ratio (shortest edge);
                                             # "squash": resize each side on its own

:func:`image_transform` turns that dict into a torchvision transform from a PIL image (or a
``uint8`` (3, H, W) tensor) to the normalised float (3, H, W) tensor the model reads.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CROP_MODES", "image_transform", "timm_preprocessing", "hf_image_preprocessing"]

CROP_MODES = ("center", "squash")

# PIL's resampling codes, as transformers' image processors store them
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def timm_preprocessing(data_config: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing dict from timm's data config (``resolve_model_data_config``)."""
    _, height, width = data_config["input_size"]
    mode = data_config.get("crop_mode") or "center"
    return {
        "image_size": (int(height), int(width)),
        "mean": tuple(float(v) for v in data_config["mean"]),
        "std": tuple(float(v) for v in data_config["std"]),
        "interpolation": str(data_config.get("interpolation") or "bilinear"),
        "crop_pct": float(data_config.get("crop_pct") or 0.875),
        "crop_mode": mode if mode in CROP_MODES else "center",
    }


def hf_image_preprocessing(processor: Any) -> dict[str, Any]:
    """The preprocessing dict from a ``transformers`` image processor's settings.

    Covers the resize-then-crop processors of the common vision backbones: a fixed
    ``{"height", "width"}`` size (ViT, SigLIP: squash), ``{"shortest_edge"}`` followed by a
    center crop (CLIP, DINOv2, BiT), and ConvNeXt's ``crop_pct`` rule.

    Raises:
        ValueError: for a processor whose resize this vocabulary cannot describe.
    """
    size = dict(getattr(processor, "size", None) or {})
    crop = dict(getattr(processor, "crop_size", None) or {}) if getattr(processor, "do_center_crop", False) else {}
    resample = getattr(processor, "resample", 2)
    interpolation = _PIL_RESAMPLE.get(int(getattr(resample, "value", resample)), "bilinear")
    mean = tuple(float(v) for v in processor.image_mean) if getattr(processor, "do_normalize", True) else (0.0, 0.0, 0.0)
    std = tuple(float(v) for v in processor.image_std) if getattr(processor, "do_normalize", True) else (1.0, 1.0, 1.0)
    if getattr(processor, "do_rescale", True) and abs(float(getattr(processor, "rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ValueError(f"hf_image_preprocessing: rescale_factor={processor.rescale_factor} is not 1/255")
    crop_pct = getattr(processor, "crop_pct", None)
    if "height" in size and "width" in size:
        image_size, scaled, mode = (size["height"], size["width"]), (size["height"], size["width"]), "squash"
    elif "shortest_edge" in size and crop_pct is not None:  # ConvNeXt
        edge = int(size["shortest_edge"])
        if edge < 384:
            image_size, scaled, mode = (edge, edge), (int(edge / crop_pct),) * 2, "center"
        else:  # warped to a square, no crop
            image_size, scaled, mode = (edge, edge), (edge, edge), "squash"
    elif "shortest_edge" in size and "height" in crop:
        image_size, scaled, mode = (crop["height"], crop["width"]), (size["shortest_edge"],) * 2, "center"
    else:
        raise ValueError(f"hf_image_preprocessing: cannot describe {type(processor).__name__} with size={size}, crop={crop}")
    if crop and mode == "squash" and (crop["height"], crop["width"]) != tuple(image_size):
        image_size = (crop["height"], crop["width"])
    pct = image_size[0] / scaled[0]
    if math.floor(image_size[0] / pct) != scaled[0]:
        pct = image_size[0] / (scaled[0] + 0.5)  # floor(size / pct) must give the scaled side back
    return {
        "image_size": (int(image_size[0]), int(image_size[1])),
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "crop_pct": float(pct),
        "crop_mode": mode,
    }


def image_transform(preprocessing: dict[str, Any]) -> Any:
    """A torchvision transform applying ``preprocessing`` (timm's eval transform, on tensors).

    Resizing runs on ``uint8`` tensors with antialiasing (as ``transformers``' fast image
    processors do); PIL's own resize, which timm's transform uses on PIL images, differs from
    it by about one grey level.

    Shapes:
        input: a PIL image or a (3, H0, W0) uint8 tensor
        returns: (3, H, W) float32 with (H, W) = ``preprocessing["image_size"]``
    """
    import torch
    from torchvision.transforms import InterpolationMode, v2

    height, width = preprocessing["image_size"]
    crop_pct = float(preprocessing.get("crop_pct", 1.0))
    mode = preprocessing.get("crop_mode", "center")
    if mode not in CROP_MODES:
        raise ValueError(f"image_transform: crop_mode must be one of {CROP_MODES}, got {mode!r}")
    interpolation = InterpolationMode(preprocessing.get("interpolation", "bilinear"))
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    if mode == "center" and scaled[0] == scaled[1]:
        resize = v2.Resize(scaled[0], interpolation=interpolation, antialias=True)  # shortest edge
    else:
        resize = v2.Resize(scaled, interpolation=interpolation, antialias=True)
    return v2.Compose(
        [
            v2.ToImage(),
            resize,
            v2.CenterCrop((height, width)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocessing["mean"]), std=list(preprocessing["std"])),
        ]
    )
