"""Small image operations on channel-last batches (N, H, W, C)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def box_downsample(images: Tensor, factor: int) -> Tensor:
    """Average ``factor`` x ``factor`` pixel blocks: (N, H*f, W*f, C) -> (N, H, W, C).

    Rendering at ``factor`` times the size and box filtering is supersampling antialiasing.
    """
    if factor == 1:
        return images
    return F.avg_pool2d(images.permute(0, 3, 1, 2), factor).permute(0, 2, 3, 1)
