"""An occupancy grid for empty-space skipping, updated during training (Instant-NGP/nerfacc)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class OccupancyGrid(nn.Module):
    """A binary grid over [-radius, radius]^3 marking cells that may hold density.

    Each update evaluates the density at one jittered point per cell, keeps an exponential
    moving *maximum* (``ema = max(decay * ema, new)``) and marks a cell occupied when its
    value exceeds ``min(density_threshold, mean(ema))`` so a field that is still faint
    everywhere is not skipped entirely. The grid is dilated by one cell so thin structures
    near cell borders survive. Until the first update every cell counts as occupied.

    Args:
        radius: half-size of the cube (the field's bounding box).
        resolution: cells per axis.
        density_threshold: density below which a cell is empty.
        decay: EMA decay per update.
        dilation: cells of dilation of the binary grid (0 = none).
    """

    def __init__(
        self,
        radius: float = 1.0,
        resolution: int = 32,
        density_threshold: float = 0.01,
        decay: float = 0.95,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if resolution < 2:
            raise ValueError(f"occupancy resolution must be >= 2, got {resolution}")
        self.radius = radius
        self.resolution = resolution
        self.density_threshold = density_threshold
        self.decay = decay
        self.dilation = dilation
        self.register_buffer("density_ema", torch.zeros(resolution, resolution, resolution))
        self.register_buffer(
            "binary", torch.ones(resolution, resolution, resolution, dtype=torch.bool)
        )
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def cell_centers(self) -> Tensor:
        """(R^3, 3) world-space centres of all cells, x-major."""
        r = self.resolution
        idx = torch.arange(r, device=self.density_ema.device, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), dim=-1).reshape(-1, 3)
        return ((grid + 0.5) / r * 2 - 1) * self.radius

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[Tensor], Tensor],
        generator: torch.Generator | None = None,
        chunk_size: int = 65536,
    ) -> None:
        """Re-evaluate the density at one jittered point per cell and refresh the binary grid.

        Args:
            density_fn: points (P, 3) -> densities (P,).
            generator: for the jitter (CPU generator).
        """
        r = self.resolution
        centers = self.cell_centers()
        jitter = (torch.rand(centers.shape, generator=generator) - 0.5).to(centers)
        points = centers + jitter * (2 * self.radius / r)
        density = torch.cat([density_fn(p).float() for p in points.split(chunk_size)])
        if not torch.isfinite(density).all():
            raise FloatingPointError("occupancy grid update: the field returned NaN/inf density")
        new = density.view(r, r, r)
        self.density_ema.copy_(torch.maximum(self.density_ema * self.decay, new))
        threshold = min(self.density_threshold, float(self.density_ema.mean()))
        occupied = self.density_ema > threshold
        if self.dilation > 0:
            k = 2 * self.dilation + 1
            occupied = (
                torch.nn.functional.max_pool3d(
                    occupied[None, None].float(), kernel_size=k, stride=1, padding=self.dilation
                )[0, 0]
                > 0
            )
        self.binary.copy_(occupied)
        self.num_updates += 1

    def query(self, points: Tensor) -> Tensor:
        """Points (..., 3) -> bool (...,): inside the cube and in an occupied cell."""
        r = self.resolution
        normalized = (points / self.radius + 1) / 2
        inside = ((normalized >= 0) & (normalized <= 1)).all(dim=-1)
        idx = (normalized * r).long().clamp(0, r - 1)
        occupied = self.binary[idx[..., 0], idx[..., 1], idx[..., 2]]
        return occupied & inside

    @property
    def occupied_fraction(self) -> float:
        return float(self.binary.float().mean())
