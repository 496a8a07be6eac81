"""Ray generation (Kaolin's pinhole conventions) and ray/box clipping."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.render.cameras import Cameras


def pixel_centers_ndc(
    width: int, height: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """NDC coordinates of pixel centres (+0.5 offsets), x right and y up, row 0 at the top.

    Returns:
        x, y: each (H, W).
    """
    cols = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    rows = 1 - (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2
    y, x = torch.meshgrid(rows, cols, indexing="ij")
    return x, y


def generate_pinhole_rays(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """One ray per pixel centre, as ``kaolin.render.camera.generate_pinhole_rays`` does.

    Returns:
        origins: (N, H, W, 3) world-space ray origins (the camera centres).
        directions: (N, H, W, 3) unit world-space directions; the centre ray is the camera's -Z.
    """
    n, h, w = len(cameras), cameras.height, cameras.width
    x, y = pixel_centers_ndc(w, h, cameras.device, cameras.c2w.dtype)
    dirs_cam = torch.stack(
        [
            x[None] * cameras.tan_half_fovx[:, None, None],
            y[None] * cameras.tan_half_fovy[:, None, None],
            -torch.ones(n, h, w, device=cameras.device, dtype=cameras.c2w.dtype),
        ],
        dim=-1,
    )
    directions = F.normalize(dirs_cam @ cameras.c2w[:, None, :3, :3].transpose(-1, -2), dim=-1)
    origins = cameras.position[:, None, None, :].expand(n, h, w, 3)
    return origins, directions


def ray_aabb_intersect(
    origins: Tensor, directions: Tensor, aabb: Tensor, near: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test of rays against an axis-aligned box.

    Args:
        origins, directions: (..., 3).
        aabb: (6,) as (xmin, ymin, zmin, xmax, ymax, zmax).
        near: minimum accepted distance along the ray.

    Returns:
        t_near, t_far: (...,) entry and exit distances (t_near >= near).
        hit: (...,) bool, the ray crosses the box with t_far > t_near.
    """
    safe_dirs = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    inv = 1.0 / safe_dirs
    t0 = (aabb[:3] - origins) * inv
    t1 = (aabb[3:] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(near)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    hit = t_far > t_near
    return t_near, t_far, hit
