"""Augmentation of classifier training batches, in torch, per image of a batch.

A small random affine (rotation, translation, scale) plus brightness/contrast. There is
deliberately no horizontal flip: left and right are anatomy on a chest X-ray. Padding revealed by
the affine is black, like the padding of :func:`cxraug.data.transforms.resize_square`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxraug.core import config as cfgio


@dataclass
class AugmentConfig:
    """Per-image random affine + intensity jitter. No flips, by design."""

    rotate_deg: float = 7.0  # uniform in [-rotate_deg, rotate_deg]
    translate: float = 0.05  # fraction of the image side, per axis
    scale: float = 0.08  # zoom factor uniform in [1 - scale, 1 + scale]
    brightness: float = 0.05  # additive shift, fraction of the full intensity range
    contrast: float = 0.1  # multiplicative around the image mean, in [1 - c, 1 + c]

    def validate(self) -> None:
        for name in ("rotate_deg", "translate", "scale", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise cfgio.ConfigError(f"augment.{name}: must be >= 0")
        if self.scale >= 1:
            raise cfgio.ConfigError("augment.scale: must be < 1 (a zoom factor of 1 +- scale)")


def augment_batch(x: torch.Tensor, aug: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random affine + brightness/contrast per image of a generator-range ``[B, 1, H, W]`` batch.

    The affine matrix is rotation x positive scale, so its determinant is always positive: the
    augmentation can never mirror an image.
    """
    b = x.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(aug.rotate_deg))
    zoom = 1 + uniform(aug.scale)
    shift = torch.stack([uniform(2 * aug.translate), uniform(2 * aug.translate)], dim=1)
    if aug.rotate_deg or aug.scale or aug.translate:
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # sample x + 1 so that zero padding is black (-1 in generator range)
        x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) - 1
    if aug.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + uniform(aug.contrast)).view(b, 1, 1, 1).to(x) + mean
    if aug.brightness:
        x = x + (2 * uniform(aug.brightness)).view(b, 1, 1, 1).to(x)  # range [-1, 1] spans 2
    return x.clamp(-1, 1)
