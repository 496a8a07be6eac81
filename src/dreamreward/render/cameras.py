"""Perspective cameras and the MVDream/threestudio 4-view orbit sampler.

What a consumer makes of a camera lives with the consumer: MVDream's 16-value embedding in
:mod:`dreamreward.models.mvdiffusion.camera_embedding`, Reward3D's view labels in
:mod:`dreamreward.models.reward3d.view_labels`.

Conventions (mirroring Kaolin's and threestudio's, which MVDream's camera embedding expects):

- World space is right-handed and **Z-up**; the object sits at the origin.
- Camera space is OpenGL's: +X right, +Y up, the camera looks down **-Z**.
- ``c2w`` is the 4x4 camera-to-world matrix whose columns are (right, up, back, position).
- Azimuth 0 puts the camera on +X looking back at the origin; azimuth grows counter-clockwise
  seen from above; elevation is the angle above the XY plane.
- Images are row-major with row 0 at the top; pixel centres sit at +0.5 (Kaolin's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _as_batch(x: Tensor | float, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = torch.as_tensor(x, dtype=dtype, device=device)
    return t.expand(n).clone() if t.ndim == 0 else t


@dataclass
class Cameras:
    """A batch of N pinhole cameras sharing one image size.

    Attributes:
        c2w: (N, 4, 4) camera-to-world matrices (OpenGL camera axes, Z-up world).
        fovy: (N,) vertical field of view in radians, in (0, pi).
        width, height: image size in pixels.
        near, far: clipping distances along the viewing direction.
    """

    c2w: Tensor
    fovy: Tensor
    width: int
    height: int
    near: float = 0.05
    far: float = 100.0

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras.c2w must be (N, 4, 4), got {tuple(self.c2w.shape)}")
        if self.fovy.shape != self.c2w.shape[:1]:
            raise ValueError(
                f"Cameras.fovy must be (N,) = ({self.c2w.shape[0]},), got {tuple(self.fovy.shape)}"
            )
        if not bool(torch.isfinite(self.fovy).all() and torch.isfinite(self.c2w).all()):
            raise ValueError("Cameras.c2w and Cameras.fovy must be finite (got NaN or inf)")
        if not bool(((self.fovy > 0) & (self.fovy < math.pi)).all()):
            raise ValueError(
                f"Cameras.fovy must be in (0, pi) radians, got {self.fovy.tolist()} "
                "(did you pass degrees?)"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def __getitem__(self, index: int | slice | Tensor) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Cameras(
            self.c2w[index], self.fovy[index], self.width, self.height, self.near, self.far
        )

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(
            self.c2w.to(device), self.fovy.to(device), self.width, self.height, self.near, self.far
        )

    def with_resolution(self, width: int, height: int | None = None) -> Cameras:
        """The same poses rendered at another image size (fovy kept)."""
        return Cameras(self.c2w, self.fovy, width, height or width, self.near, self.far)

    @staticmethod
    def cat(cameras: list[Cameras]) -> Cameras:
        first = cameras[0]
        return Cameras(
            torch.cat([c.c2w for c in cameras]),
            torch.cat([c.fovy for c in cameras]),
            first.width,
            first.height,
            first.near,
            first.far,
        )

    # ------------------------------------------------------------------ geometry
    @property
    def position(self) -> Tensor:
        """(N, 3) camera centres in world space."""
        return self.c2w[:, :3, 3]

    @property
    def w2c(self) -> Tensor:
        """(N, 4, 4) world-to-camera matrices (rigid inverse of ``c2w``)."""
        rot = self.c2w[:, :3, :3]
        out = torch.zeros_like(self.c2w)
        out[:, :3, :3] = rot.transpose(1, 2)
        out[:, :3, 3] = -(rot.transpose(1, 2) @ self.c2w[:, :3, 3:4]).squeeze(-1)
        out[:, 3, 3] = 1.0
        return out

    @property
    def tan_half_fovy(self) -> Tensor:
        """(N,)"""
        return torch.tan(self.fovy / 2)

    @property
    def tan_half_fovx(self) -> Tensor:
        """(N,) horizontal half-angle tangent implied by the aspect ratio."""
        return self.tan_half_fovy * (self.width / self.height)

    def world_to_camera(self, points: Tensor) -> Tensor:
        """Points (P, 3) or (N, P, 3) in world space -> (N, P, 3) in camera space."""
        if points.ndim == 2:
            points = points.unsqueeze(0).expand(len(self), -1, -1)
        w2c = self.w2c.to(points.dtype)
        return points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]

    def project(self, points_camera: Tensor) -> Tensor:
        """Camera-space points (N, P, 3) -> (N, P, 2) normalised device coordinates.

        NDC x points right, y up; the image spans [-1, 1] on both axes. Points must lie in
        front of the camera (z < 0); depth is clamped to ``near`` to avoid division by zero.
        """
        depth = (-points_camera[..., 2]).clamp_min(self.near)
        x = points_camera[..., 0] / (depth * self.tan_half_fovx[:, None].to(depth.dtype))
        y = points_camera[..., 1] / (depth * self.tan_half_fovy[:, None].to(depth.dtype))
        return torch.stack([x, y], dim=-1)

    def projection_matrix(self) -> Tensor:
        """(N, 4, 4) OpenGL perspective projection (camera space -> clip space)."""
        n, f = self.near, self.far
        proj = torch.zeros(len(self), 4, 4, dtype=self.c2w.dtype, device=self.device)
        proj[:, 0, 0] = 1.0 / self.tan_half_fovx
        proj[:, 1, 1] = 1.0 / self.tan_half_fovy
        proj[:, 2, 2] = -(f + n) / (f - n)
        proj[:, 2, 3] = -2.0 * f * n / (f - n)
        proj[:, 3, 2] = -1.0
        return proj


def look_at(
    eye: Tensor,
    at: Tensor | None = None,
    up: Tensor | None = None,
) -> Tensor:
    """Camera-to-world matrices looking from ``eye`` towards ``at``.

    Args:
        eye: (N, 3) camera centres.
        at: (N, 3) or (3,) look-at targets (default: origin).
        up: (N, 3) or (3,) world up (default: +Z).

    Returns:
        (N, 4, 4) c2w with columns (right, up, -forward, eye).

    Raises:
        ValueError: a camera sits on its target, or looks along ``up``.
    """
    eye = torch.as_tensor(eye)
    at = (
        torch.zeros_like(eye) if at is None else torch.as_tensor(at, dtype=eye.dtype).expand_as(eye)
    )
    up_t = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up)
    up_t = up_t.to(eye).expand_as(eye)
    forward = at - eye
    dist = forward.norm(dim=-1)
    if bool((dist < 1e-8).any()):
        raise ValueError("degenerate camera: eye coincides with its look-at target (distance 0)")
    forward = forward / dist[:, None]
    right = torch.linalg.cross(forward, up_t, dim=-1)
    if bool((right.norm(dim=-1) < 1e-6).any()):
        # Looking straight along the up axis: any horizontal right vector is valid.
        alt = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
        degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
        right = torch.where(degenerate, torch.linalg.cross(forward, alt, dim=-1), right)
    right = F.normalize(right, dim=-1)
    true_up = F.normalize(torch.linalg.cross(right, forward, dim=-1), dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = right, true_up, -forward
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_to_position(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """(N,) elevation, azimuth (degrees), distance -> (N, 3) Z-up camera positions."""
    elev, azim = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [
            distance * torch.cos(elev) * torch.cos(azim),
            distance * torch.cos(elev) * torch.sin(azim),
            distance * torch.sin(elev),
        ],
        dim=-1,
    )


def orbit_cameras(
    elevation_deg: Tensor | float,
    azimuth_deg: Tensor,
    distance: Tensor | float,
    fovy_deg: Tensor | float,
    width: int,
    height: int | None = None,
    near: float = 0.05,
    far: float = 100.0,
) -> Cameras:
    """Cameras on a sphere around the origin, looking at it (Z up).

    Args:
        elevation_deg, distance, fovy_deg: scalars or (N,) tensors.
        azimuth_deg: (N,) azimuths in degrees (0 = on +X).

    Raises:
        ValueError: non-positive distance or a field of view outside (0, 180) degrees.
    """
    azimuth_deg = torch.as_tensor(azimuth_deg, dtype=torch.float32)
    if azimuth_deg.ndim == 0:
        azimuth_deg = azimuth_deg[None]
    n, dt, dev = azimuth_deg.shape[0], azimuth_deg.dtype, azimuth_deg.device
    elevation = _as_batch(elevation_deg, n, dt, dev)
    dist = _as_batch(distance, n, dt, dev)
    fovy = _as_batch(fovy_deg, n, dt, dev)
    if bool((~torch.isfinite(dist) | (dist <= 0)).any()):
        raise ValueError(f"camera distance must be positive and finite, got {dist.tolist()}")
    if bool((~torch.isfinite(elevation) | ~torch.isfinite(azimuth_deg)).any()):
        raise ValueError("camera elevation/azimuth must be finite")
    if bool((~torch.isfinite(fovy) | (fovy <= 0) | (fovy >= 180)).any()):
        raise ValueError(f"fovy_deg must be in (0, 180) degrees, got {fovy.tolist()}")
    eye = spherical_to_position(elevation, azimuth_deg, dist)
    return Cameras(look_at(eye), torch.deg2rad(fovy), width, height or width, near, far)


@dataclass
class OrbitViews:
    """Cameras of B objects x V views (object-major, view-minor) and their spherical parameters.

    Attributes:
        cameras: B*V cameras.
        elevation_deg, azimuth_deg, distance, fovy_deg: (B*V,)
        num_views: V.
    """

    cameras: Cameras
    elevation_deg: Tensor
    azimuth_deg: Tensor
    distance: Tensor
    fovy_deg: Tensor
    num_views: int


class OrbitCameraSampler:
    """MVDream/threestudio random cameras: V views that share elevation, fov and distance, with
    azimuths ``(u + k) / V * 360`` for k = 0..V-1 and a uniform random offset u.

    The distance follows threestudio's ``relative_radius``: the object keeps the same apparent
    size whatever the fov, ``distance = s / tan(fovy / 2)`` with ``s ~ U(distance_scale_range)``.

    Args:
        num_views: views per object (MVDream: 4).
        width, height: image size.
        elevation_range_deg: uniform elevation range (MVDream: 0-30).
        fovy_range_deg: uniform vertical fov range (MVDream: 15-60).
        distance_scale_range: range of ``s`` above (MVDream: 0.8-1.0).
        azimuth_jitter: whether the azimuth offset u is random (else 0: front, side, back, side).
    """

    def __init__(
        self,
        num_views: int = 4,
        width: int = 64,
        height: int | None = None,
        elevation_range_deg: tuple[float, float] = (0.0, 30.0),
        fovy_range_deg: tuple[float, float] = (15.0, 60.0),
        distance_scale_range: tuple[float, float] = (0.8, 1.0),
        azimuth_jitter: bool = True,
    ) -> None:
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        for name, (lo, hi) in {
            "elevation_range_deg": elevation_range_deg,
            "fovy_range_deg": fovy_range_deg,
            "distance_scale_range": distance_scale_range,
        }.items():
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if not (fovy_range_deg[0] > 0 and fovy_range_deg[1] < 180):
            raise ValueError(f"fovy_range_deg must lie in (0, 180), got {fovy_range_deg}")
        if distance_scale_range[0] <= 0:
            raise ValueError(f"distance_scale_range must be positive, got {distance_scale_range}")
        self.num_views = num_views
        self.width = width
        self.height = height or width
        self.elevation_range_deg = elevation_range_deg
        self.fovy_range_deg = fovy_range_deg
        self.distance_scale_range = distance_scale_range
        self.azimuth_jitter = azimuth_jitter

    def sample(self, batch_size: int = 1, generator: torch.Generator | None = None) -> OrbitViews:
        """Draw ``batch_size`` objects' worth of ``num_views`` cameras (object-major)."""

        def uniform(lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * torch.rand(batch_size, generator=generator)

        elevation = uniform(*self.elevation_range_deg)
        fovy = uniform(*self.fovy_range_deg)
        scale = uniform(*self.distance_scale_range)
        distance = scale / torch.tan(torch.deg2rad(fovy) / 2)
        offset = torch.rand(batch_size, generator=generator) if self.azimuth_jitter else None
        if offset is None:
            offset = torch.zeros(batch_size)
        k = torch.arange(self.num_views, dtype=torch.float32)
        azimuth = (offset[:, None] + k[None, :]) / self.num_views * 360.0
        azimuth = torch.remainder(azimuth + 180.0, 360.0) - 180.0
        v = self.num_views
        per_view = {
            "elevation_deg": elevation.repeat_interleave(v),
            "azimuth_deg": azimuth.reshape(-1),
            "distance": distance.repeat_interleave(v),
            "fovy_deg": fovy.repeat_interleave(v),
        }
        cameras = orbit_cameras(
            per_view["elevation_deg"],
            per_view["azimuth_deg"],
            per_view["distance"],
            per_view["fovy_deg"],
            self.width,
            self.height,
        )
        return OrbitViews(cameras=cameras, num_views=v, **per_view)
