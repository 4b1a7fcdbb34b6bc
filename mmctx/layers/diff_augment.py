"""Differentiable augmentation of a discriminator's input (DiffAugment, Zhao et al. 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DIFF_AUGMENT_OPS", "DiffAugment"]

#: The operations :class:`DiffAugment` knows, applied in this order.
DIFF_AUGMENT_OPS: tuple[str, ...] = ("color", "translation", "cutout")


class DiffAugment(nn.Module):
    """Random, differentiable augmentation of a batch of pictures in [-1, 1].

    A GAN's discriminator sees real *and* generated samples through the same random
    policy (one draw per sample), so it cannot memorise the few real pictures and the
    generator still gets gradients (every operation is differentiable in the input):

    - ``"color"``: per-sample brightness shift (``± brightness``), saturation scale
      (``[0, 2]`` around the pixel's channel mean) and contrast scale (``[0.5, 1.5]``
      around the picture's mean);
    - ``"translation"``: per-sample integer shift of up to ``translation`` × the side in
      each direction, edges replicated (no artificial border);
    - ``"cutout"``: one square of ``cutout`` × the sides per sample set to ``fill``.

    Args:
        policy: operations to apply, a subset of :data:`DIFF_AUGMENT_OPS`.
        translation: largest shift, as a fraction of each side.
        cutout: side of the cut square, as a fraction of each side.
        brightness: largest brightness shift (pixel units in [-1, 1]).
        fill: value of the cut-out square.

    Shapes:
        x: (B, C, H, W) → (B, C, H, W)
    """

    def __init__(
        self,
        policy: list[str] = ["color", "translation"],  # noqa: B006 - never mutated; shown by the CLI
        translation: float = 0.125,
        cutout: float = 0.25,
        brightness: float = 0.5,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        unknown = [op for op in policy if op not in DIFF_AUGMENT_OPS]
        if unknown:
            raise ValueError(f"DiffAugment: unknown policy ops {unknown}; known: {DIFF_AUGMENT_OPS}")
        if not 0.0 <= translation < 0.5 or not 0.0 <= cutout < 1.0:
            raise ValueError(
                f"DiffAugment: translation must be in [0, 0.5) and cutout in [0, 1), got {translation}, {cutout}"
            )
        self.policy = [op for op in DIFF_AUGMENT_OPS if op in policy]
        self.translation = translation
        self.cutout = cutout
        self.brightness = brightness
        self.fill = fill

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment every sample of ``x`` with its own random draw (from ``generator`` if
        given, so a seed fixes the result). Shapes: (B, C, H, W) → (B, C, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"DiffAugment: x must be (B, C, H, W), got shape {tuple(x.shape)}")
        for op in self.policy:
            x = getattr(self, f"_{op}")(x, generator)
        return x

    def _rand(self, shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.rand(shape, generator=generator).to(device=x.device, dtype=x.dtype)

    def _color(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        B = x.shape[0]
        x = x + (self._rand((B, 1, 1, 1), x, generator) - 0.5) * 2.0 * self.brightness
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        x = (x - mean) * (self._rand((B, 1, 1, 1), x, generator) * 2.0) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        return (x - mean) * (self._rand((B, 1, 1, 1), x, generator) + 0.5) + mean

    def _translation(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        B, C, H, W = x.shape
        sh, sw = int(H * self.translation + 0.5), int(W * self.translation + 0.5)
        if sh == 0 and sw == 0:
            return x
        dy = torch.randint(-sh, sh + 1, (B, 1, 1), generator=generator).to(x.device)
        dx = torch.randint(-sw, sw + 1, (B, 1, 1), generator=generator).to(x.device)
        rows = (torch.arange(H, device=x.device).view(1, H, 1) - dy).clamp(0, H - 1)  # (B, H, 1)
        cols = (torch.arange(W, device=x.device).view(1, 1, W) - dx).clamp(0, W - 1)  # (B, 1, W)
        index = (rows * W + cols).view(B, 1, H * W).expand(B, C, H * W)  # source pixel of each output pixel
        return x.flatten(2).gather(2, index).view(B, C, H, W)

    def _cutout(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        B, _, H, W = x.shape
        ch, cw = max(1, int(H * self.cutout + 0.5)), max(1, int(W * self.cutout + 0.5))
        top = (self._rand((B, 1, 1), x, generator) * (H - ch + 1)).long().clamp(max=H - ch)
        left = (self._rand((B, 1, 1), x, generator) * (W - cw + 1)).long().clamp(max=W - cw)
        r = torch.arange(H, device=x.device).view(1, H, 1)
        c = torch.arange(W, device=x.device).view(1, 1, W)
        cut = (r >= top) & (r < top + ch) & (c >= left) & (c < left + cw)  # (B, H, W)
        return x.masked_fill(cut.unsqueeze(1), self.fill)

