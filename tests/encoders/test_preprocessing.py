"""The preprocessing dict and its transform equal the models' own processors (timm, transformers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmctx.encoders import image_transform
from mmctx.encoders.preprocessing import hf_image_preprocessing, timm_preprocessing


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(300, 200), (224, 224), (180, 400), (97, 131)]
    # smooth content (an upsampled random field) as in photos, plus pixel noise
    images = []
    for h, w in sizes:
        field = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(field).resize((w, h), Image.BILINEAR), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(noisy))
    return images


def _processors() -> dict[str, object]:
    import transformers

    return {
        "vit (squash)": transformers.ViTImageProcessor(),
        "clip (shortest edge + crop)": transformers.CLIPImageProcessor(),
        "siglip": transformers.SiglipImageProcessor(),
        "convnext-224 (crop_pct)": transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
        "convnext-384 (warp)": transformers.ConvNextImageProcessor(size={"shortest_edge": 384}),
        "dinov2/bit (256 → 224)": transformers.BitImageProcessor(
            size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}
        ),
    }


@pytest.mark.parametrize("name", sorted(_processors()))
def test_equals_transformers_image_processor(name: str) -> None:
    processor = _processors()[name]
    images = _images()
    preprocessing = hf_image_preprocessing(processor)
    expected = processor(images, return_tensors="pt").pixel_values  # (4, 3, H, W)
    transform = image_transform(preprocessing)
    got = torch.stack([transform(image) for image in images])
    assert got.shape == expected.shape and tuple(got.shape[-2:]) == preprocessing["image_size"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet10t", "vit_tiny_patch16_224"])
def test_equals_timm_eval_transform(backbone: str) -> None:
    import timm
    from timm.data import create_transform, resolve_model_data_config

    config = resolve_model_data_config(timm.create_model(backbone, pretrained=False))
    reference = create_transform(**config)  # PIL resize
    transform = image_transform(timm_preprocessing(config))  # tensor resize
    for image in _images():
        expected, got = reference(image), transform(image)
        assert got.shape == expected.shape
        # PIL's and torch's antialiased resizes differ by at most about one grey level
        grey = 1 / 255 / min(config["std"])
        assert float((got - expected).abs().max()) <= 2.5 * grey
        assert float((got - expected).abs().mean()) <= 0.1 * grey


def test_bad_crop_mode_raises() -> None:
    with pytest.raises(ValueError, match="crop_mode"):
        image_transform({"image_size": (8, 8), "mean": (0, 0, 0), "std": (1, 1, 1), "crop_mode": "border"})
