"""Volume rendering of a :class:`NeRFField`: ray/box clipping, sampling with occupancy-grid
skipping, compositing, background blending."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dreamreward.render.background import Background
from dreamreward.render.cameras import Cameras
from dreamreward.render.compositing import composite_dense
from dreamreward.render.nerf import NeRFField
from dreamreward.render.occupancy import OccupancyGrid
from dreamreward.render.rays import generate_pinhole_rays, ray_aabb_intersect


class VolumeRenderer(nn.Module):
    """Renders rays through a field inside its bounding cube.

    Each ray gets ``num_samples_per_ray`` stratified samples between its entry and exit of the
    cube. With an occupancy grid, samples in empty cells are skipped: the field (the dominant
    cost) is evaluated only on the rest, which are composited with zero density elsewhere, so
    the result equals dense sampling wherever the grid is conservative. Compositing stays on
    the dense (rays x samples) layout because every ray has the same sample budget here;
    :func:`~dreamreward.render.compositing.composite_packed` is the equivalent for callers with
    ragged per-ray samples (tested to agree).

    Args:
        num_samples_per_ray: samples per ray within the cube.
        occupancy_grid: the skipping grid (``None`` = dense sampling always).
        grid_update_interval: training steps between grid updates.
        grid_warmup_steps: steps before skipping starts (the field is still a blob).
        chunk_size: rays per chunk when rendering whole images.
    """

    def __init__(
        self,
        num_samples_per_ray: int = 64,
        occupancy_grid: OccupancyGrid | None = None,
        grid_update_interval: int = 16,
        grid_warmup_steps: int = 64,
        chunk_size: int = 8192,
    ) -> None:
        super().__init__()
        if num_samples_per_ray < 1:
            raise ValueError(f"num_samples_per_ray must be >= 1, got {num_samples_per_ray}")
        self.num_samples_per_ray = num_samples_per_ray
        self.occupancy_grid = occupancy_grid
        self.grid_update_interval = grid_update_interval
        self.grid_warmup_steps = grid_warmup_steps
        self.chunk_size = chunk_size

    @torch.no_grad()
    def update_occupancy(
        self, field: NeRFField, step: int, generator: torch.Generator | None = None
    ) -> bool:
        """Refresh the occupancy grid when ``step`` calls for it; returns whether it did.

        Driven by the trainer's global step, so a resumed run updates on the same steps.
        """
        grid = self.occupancy_grid
        if grid is None or step < self.grid_warmup_steps or step % self.grid_update_interval:
            return False
        grid.update(field.density, generator=generator)
        return True

    def skipping_active(self) -> bool:
        return self.occupancy_grid is not None and int(self.occupancy_grid.num_updates) > 0

    def forward(
        self,
        field: NeRFField,
        background: Background,
        origins: Tensor,
        directions: Tensor,
        stratified: bool | None = None,
        use_occupancy: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Render rays.

        Args:
            origins, directions: (R, 3) world-space rays (directions unit length).
            stratified: jitter samples within their bins (default: ``self.training``).
            use_occupancy: skip empty cells when a grid has been built.

        Returns:
            dict with ``rgb`` (R, 3) blended over the background, ``rgb_foreground`` (R, 3),
            ``opacity`` (R, 1), ``distance`` (R, 1) expected distance along the ray,
            ``weights`` (R, S) and ``samples_evaluated``
            (a 0-dim long tensor: how many field evaluations the call made).
        """
        if origins.shape != directions.shape or origins.ndim != 2 or origins.shape[-1] != 3:
            raise ValueError(
                f"rays must be (R, 3) origins and directions, got {tuple(origins.shape)} and "
                f"{tuple(directions.shape)}"
            )
        stratified = self.training if stratified is None else stratified
        num_rays, s = origins.shape[0], self.num_samples_per_ray
        grid = self.occupancy_grid
        if grid is not None and abs(grid.radius - field.radius) > 1e-6:
            raise ValueError(
                f"occupancy_grid.radius={grid.radius} differs from field.radius={field.radius}: "
                "the grid must cover the field's bounding cube"
            )
        aabb = field.aabb.to(origins)
        t_near, t_far, hit = ray_aabb_intersect(origins, directions, aabb)
        t_far = torch.where(hit, t_far, t_near)
        offsets = torch.arange(s, device=origins.device, dtype=origins.dtype)
        if stratified:
            jitter = torch.rand(num_rays, s, generator=generator).to(origins)
        else:
            jitter = torch.full((num_rays, s), 0.5, device=origins.device, dtype=origins.dtype)
        span = (t_far - t_near)[:, None]
        t_mid = t_near[:, None] + span * (offsets[None] + jitter) / s  # (R, S)
        deltas = (span / s).expand(num_rays, s)
        points = origins[:, None, :] + t_mid[..., None] * directions[:, None, :]  # (R, S, 3)

        keep = hit[:, None].expand(num_rays, s)
        if use_occupancy and self.skipping_active():
            keep = keep & self.occupancy_grid.query(points)
        flat_keep = keep.reshape(-1)
        sigma_kept, rgb_kept = field(points.reshape(-1, 3)[flat_keep])
        if not torch.isfinite(sigma_kept).all() or not torch.isfinite(rgb_kept).all():
            raise FloatingPointError(
                "volume rendering: the field produced NaN/inf density or colour; lower the "
                "learning rate or check the inputs"
            )
        sigmas = sigma_kept.new_zeros(num_rays * s).masked_scatter(flat_keep, sigma_kept)
        rgbs = rgb_kept.new_zeros(num_rays * s, 3).masked_scatter(flat_keep[:, None], rgb_kept)
        result = composite_dense(sigmas.view(num_rays, s), rgbs.view(num_rays, s, 3), deltas, t_mid)
        bg = background(directions)
        return {
            "rgb": result.rgb + (1 - result.opacity) * bg,
            "rgb_foreground": result.rgb,
            "opacity": result.opacity,
            "distance": result.depth,
            "weights": result.weights,
            "samples_evaluated": flat_keep.sum(),
        }

    def render_cameras(
        self,
        field: NeRFField,
        background: Background,
        cameras: Cameras,
        use_occupancy: bool = True,
    ) -> dict[str, Tensor]:
        """Render whole images (no jitter), chunked over rays.

        Returns:
            dict with ``rgb`` (N, H, W, 3), ``opacity`` (N, H, W, 1), ``depth`` (N, H, W, 1)
            along the camera's -Z axis (the rasterizer's meaning of depth), ``distance``
            (N, H, W, 1) along each ray, and ``samples_evaluated``.
        """
        origins, directions = generate_pinhole_rays(cameras)
        n, h, w = len(cameras), cameras.height, cameras.width
        o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
        outputs: dict[str, list[Tensor]] = {"rgb": [], "opacity": [], "distance": []}
        evaluated = torch.zeros((), dtype=torch.long)
        for oc, dc in zip(o.split(self.chunk_size), d.split(self.chunk_size), strict=True):
            out = self(field, background, oc, dc, stratified=False, use_occupancy=use_occupancy)
            for key in outputs:
                outputs[key].append(out[key])
            evaluated = evaluated + out["samples_evaluated"].cpu()
        images = {k: torch.cat(v).reshape(n, h, w, -1) for k, v in outputs.items()}
        # z-depth = ray distance x cos(angle between the ray and the camera's -Z axis)
        forward = -cameras.c2w[:, :3, 2].to(directions)
        cosine = (directions * forward[:, None, None, :]).sum(-1, keepdim=True)
        images["depth"] = images["distance"] * cosine
        images["samples_evaluated"] = evaluated
        return images
