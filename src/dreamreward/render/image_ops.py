"""Small image operations: box filtering (channel-last batches) and a Gaussian blur."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def box_downsample(images: Tensor, factor: int) -> Tensor:
    """Average ``factor`` x ``factor`` pixel blocks: (N, H*f, W*f, C) -> (N, H, W, C).

    Rendering at ``factor`` times the size and box filtering is supersampling antialiasing.
    """
    if factor == 1:
        return images
    return F.avg_pool2d(images.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)


def gaussian_blur(images: Tensor, sigma: float, radius: int | None = None) -> Tensor:
    """(N, C, H, W) -> the same, blurred by a separable Gaussian of standard deviation ``sigma``
    pixels (replicate padding; differentiable). ``radius`` (default ``ceil(3 sigma)``, at least
    1) is the kernel's half width. ``sigma <= 0`` returns the images unchanged."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma)) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
