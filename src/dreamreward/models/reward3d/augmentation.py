"""Random small changes of framing and sharpness of Reward3D's input views.

A reward trained only on clean, centred, sharp renders can depend on exact pixels: its gradient
on a DreamFL asset (soft, off-centre, lower-resolution) then points anywhere. Training on views
moved, zoomed and softened a little asks the reward to judge what is in the picture rather than
where each pixel lies, so its value (and gradient) changes smoothly with the render. Every
operation is differentiable, so the same module can augment renders at guidance time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dreamreward.render.image_ops import gaussian_blur


class ViewAugmentation(nn.Module):
    """Per view: a random zoom and shift (bilinear resampling; the border pixels, background in
    a render, fill what moves into view), then with probability ``soften_probability`` a
    random loss of resolution (bilinear down to a factor of ``min_resolution``..1 of the size
    and back up), the softness of a low-resolution NeRF render; finally, with ``blur_sigma``
    > 0, a fixed Gaussian blur (not random: at guidance time it makes the judge read only the
    coarse picture, so its gradient is smooth in the pixels); last, with ``noise_std`` > 0,
    Gaussian pixel noise (randomized smoothing: the gradient of the mean score over noisy copies
    is smooth by construction, and a ranking read so holds against moves within an L2 radius of
    the order of the noise's std; at 64 px that is far smaller than the change of 1.3/255 per
    pixel value that reverses a third of the shipped model's rankings: docs/experiments.md,
    "Randomized smoothing").

    Args:
        max_zoom: zoom factor drawn log-uniformly in [1 / max_zoom, max_zoom] (1 = none).
        max_shift: shift drawn uniformly in [-max_shift, max_shift] of the image size, per axis.
        min_resolution: the smallest resolution factor of the softening, in (0, 1].
        soften_probability: chance that a view is softened.
        blur_sigma: the fixed blur's standard deviation in pixels of a 64 px view (scaled with
            the view size); 0 = none.
        noise_std: standard deviation of the added noise, in pixel values (views in [0, 1]; the
            sum is clipped to [0, 1] like every view Reward3D reads, so on a white background
            the noise only darkens); 0 = none. Keep it below the world's noise defect (0.08-0.33
            on the object), or that defect cannot be told.
    """

    def __init__(
        self,
        max_zoom: float = 1.1,
        max_shift: float = 0.06,
        min_resolution: float = 0.5,
        soften_probability: float = 0.5,
        blur_sigma: float = 0.0,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__()
        if not (math.isfinite(max_zoom) and max_zoom >= 1.0):
            raise ValueError(f"max_zoom must be a finite number >= 1, got {max_zoom}")
        if not (math.isfinite(max_shift) and 0.0 <= max_shift < 0.5):
            raise ValueError(f"max_shift must be in [0, 0.5), got {max_shift}")
        if not (0.0 < min_resolution <= 1.0):
            raise ValueError(f"min_resolution must be in (0, 1], got {min_resolution}")
        if not (0.0 <= soften_probability <= 1.0):
            raise ValueError(f"soften_probability must be in [0, 1], got {soften_probability}")
        if not (math.isfinite(blur_sigma) and blur_sigma >= 0.0):
            raise ValueError(f"blur_sigma must be a finite number >= 0, got {blur_sigma}")
        if not (math.isfinite(noise_std) and noise_std >= 0.0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        self.blur_sigma = blur_sigma
        self.noise_std = noise_std
        self.max_zoom = max_zoom
        self.max_shift = max_shift
        self.min_resolution = min_resolution
        self.soften_probability = soften_probability

    def forward(self, views: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(..., 3, H, W) views in [0, 1] -> the same shape, each view augmented on its own.

        Random draws come from ``generator`` (default the global RNG, which the training step
        seeds per step, so a resumed run draws the same)."""
        if views.ndim < 3 or views.shape[-3] != 3:
            raise ValueError(f"expected views (..., 3, H, W), got {tuple(views.shape)}")
        shape = views.shape
        images = views.reshape(-1, *shape[-3:])
        n, _, h, w = images.shape
        device, dtype = images.device, images.dtype

        def uniform(low: float, high: float) -> Tensor:
            return (torch.rand(n, generator=generator) * (high - low) + low).to(device, dtype)

        log_zoom = math.log(self.max_zoom)
        scale = torch.exp(-uniform(-log_zoom, log_zoom))  # sampling grid scale = 1 / zoom
        shift_x, shift_y = (uniform(-self.max_shift, self.max_shift) * 2 for _ in range(2))
        theta = torch.zeros(n, 2, 3, device=device, dtype=dtype)
        theta[:, 0, 0], theta[:, 1, 1] = scale, scale
        theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
        grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
        out = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )

        soften = torch.rand(n, generator=generator) < self.soften_probability
        factors = (
            torch.rand(n, generator=generator) * (1 - self.min_resolution) + self.min_resolution
        )
        if soften.any() and self.min_resolution < 1.0:
            softened = []
            for i in range(n):
                image = out[i : i + 1]
                if soften[i]:
                    size = (
                        max(1, round(h * float(factors[i]))),
                        max(1, round(w * float(factors[i]))),
                    )
                    small = F.interpolate(image, size=size, mode="bilinear", antialias=True)
                    image = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
                softened.append(image)
            out = torch.cat(softened)
        out = gaussian_blur(out, self.blur_sigma * h / 64)
        if self.noise_std > 0:
            noise = torch.randn(out.shape, generator=generator).to(device, dtype)
            out = out + self.noise_std * noise
        return out.clamp(0.0, 1.0).reshape(shape)
