"""The asset DreamFL and reconstruction optimise: a NeRF, then a DMTet mesh made from it.

Magic3D/threestudio's geometry pipeline as one object: a NeRF field over a background, rendered
by the volume renderer (stage 1); then DMTet initialised from the field's density level
``isosurface_threshold`` (Magic3D's ``create_from``), with the field's colour branch giving the
mesh's vertex colours, rendered by the supersampled rasterizer (stage 2). A LightningModule owns
when the stage changes and what supervises the renders; it asks the asset for renders, the mesh
and the exported files:

- :meth:`TwoStageAsset.render_rays` / :meth:`TwoStageAsset.render_nerf`: stage-1 renders;
- :meth:`TwoStageAsset.start_mesh_stage`, :meth:`TwoStageAsset.mesh`,
  :meth:`TwoStageAsset.render_mesh`: stage 2;
- :meth:`TwoStageAsset.render`: whichever stage the asset is in (evaluation);
- :meth:`TwoStageAsset.export`: mesh files and a turntable GIF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from dreamreward.render.background import Background, SolidBackground
from dreamreward.render.cameras import Cameras, orbit_cameras
from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.export import export_mesh, save_turntable
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_render import render_mesh_antialiased
from dreamreward.render.nerf import NeRFField
from dreamreward.render.rays import generate_pinhole_rays
from dreamreward.render.volume import VolumeRenderer


class TwoStageAsset(nn.Module):
    """A NeRF (stage 1) that becomes a DMTet mesh (stage 2), over a background.

    Args:
        field: the NeRF field (density + colour).
        volume_renderer: renders the field.
        dmtet: the stage-2 geometry.
        background: colour behind the object (white by default).
        isosurface_threshold: the density level that becomes the DMTet surface.
        mesh_supersample: the mesh is rasterized at this factor and box filtered.
        soft_sigma: the soft silhouette's falloff, in squared output pixels.
    """

    def __init__(
        self,
        field: NeRFField,
        volume_renderer: VolumeRenderer,
        dmtet: DMTetGeometry,
        background: Background | None = None,
        isosurface_threshold: float = 10.0,
        mesh_supersample: int = 2,
        soft_sigma: float = 1.0,
    ) -> None:
        super().__init__()
        self.field = field
        self.volume_renderer = volume_renderer
        self.dmtet = dmtet
        self.background = background or SolidBackground()
        self.isosurface_threshold = isosurface_threshold
        self.mesh_supersample = mesh_supersample
        self.soft_sigma = soft_sigma
        # Saved in checkpoints: a run resumed in stage 2 must not re-initialise DMTet.
        self.register_buffer("dmtet_initialized", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ stage 1: the NeRF
    def render_rays(
        self, origins: Tensor, directions: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The volume renderer's output for R rays (origins, directions (R, 3)); ``generator``
        draws the sample jitter."""
        return self.volume_renderer(
            self.field, self.background, origins, directions, generator=generator
        )

    def render_nerf(self, cameras: Cameras, generator: torch.Generator | None = None) -> Tensor:
        """(N, H, W, 3) training renders of the field (jittered samples)."""
        origins, directions = generate_pinhole_rays(cameras)
        n, h, w = len(cameras), cameras.height, cameras.width
        out = self.render_rays(origins.reshape(-1, 3), directions.reshape(-1, 3), generator)
        return out["rgb"].reshape(n, h, w, 3)

    def update_occupancy(self, step: int, generator: torch.Generator) -> None:
        """Refresh the volume renderer's occupancy grid from the field (on its schedule)."""
        self.volume_renderer.update_occupancy(self.field, step, generator)

    # ------------------------------------------------------------------ stage 2: the mesh
    @property
    def has_mesh(self) -> bool:
        """Whether DMTet has been initialised from the field (the training module decides when
        the mesh stage starts; this says whether the asset has its mesh yet)."""
        return bool(self.dmtet_initialized)

    def start_mesh_stage(self) -> None:
        """Initialise DMTet from the field's density (once; later calls do nothing).

        Raises:
            RuntimeError: the density never crosses ``isosurface_threshold`` on the tet grid,
                with what to change.
        """
        if self.has_mesh:
            return
        self.dmtet.initialize_from_density(self.field.density, self.isosurface_threshold)
        sdf = self.dmtet.sdf.detach()
        if not bool((sdf < 0).any() and (sdf > 0).any()):
            with torch.no_grad():
                density = self.field.density(self.dmtet.grid_vertices)
            low, peak = float(density.min()), float(density.max())
            where = (
                f"the NeRF density on the tet grid lies in [{low:.3g}, {peak:.3g}], never crossing "
                f"isosurface_threshold={self.isosurface_threshold}"
            )
            if not (math.isfinite(low) and math.isfinite(peak)):
                advice = "the field diverged (non-finite density): lower the learning rates"
            elif low >= self.isosurface_threshold:
                advice = (
                    "the density fills the whole grid (the field diverged or the object fills "
                    "the box): lower the learning rates or raise "
                    "model.mesh_stage.isosurface_threshold"
                )
            else:
                advice = "lower model.mesh_stage.isosurface_threshold or raise model.nerf_steps"
            raise RuntimeError(f"cannot initialise DMTet: {where}; {advice}")
        self.dmtet_initialized.fill_(True)

    def mesh(self) -> Mesh:
        """The stage-2 mesh with vertex colours from the colour field (differentiable); starts
        the mesh stage if needed."""
        self.start_mesh_stage()
        mesh = self.dmtet.extract_mesh()
        return Mesh(mesh.vertices, mesh.faces, self.field.color(mesh.vertices))

    def render_mesh(self, mesh: Mesh, cameras: Cameras, soft: bool) -> dict[str, Tensor]:
        """Rasterize ``mesh`` (supersampled, box filtered) over the background.

        Returns:
            dict with ``rgb`` (N, H, W, 3), ``alpha`` (N, H, W, 1) (soft if ``soft``) and
            ``mask`` (N, H, W, 1) coverage.
        """
        return render_mesh_antialiased(
            mesh,
            cameras,
            self.background,
            self.mesh_supersample,
            self.soft_sigma if soft else None,
        )

    # ------------------------------------------------------------------ either stage
    def render(self, cameras: Cameras) -> Tensor:
        """(N, H, W, 3) renders with the current stage's representation (no jitter)."""
        if self.has_mesh:
            return self.render_mesh(self.mesh(), cameras, soft=False)["rgb"]
        return self.volume_renderer.render_cameras(self.field, self.background, cameras)["rgb"]

    @torch.no_grad()
    def export(
        self,
        out_dir: Path,
        formats: Sequence[str] = ("glb", "obj"),
        turntable_frames: int = 24,
        turntable_size: int = 128,
        turntable_elevation_deg: float = 20.0,
        turntable_distance: float = 2.2,
        turntable_fovy_deg: float = 45.0,
    ) -> Mesh:
        """Write the mesh (``mesh.<format>``) and ``turntable.gif``; returns the CPU mesh."""
        out_dir.mkdir(parents=True, exist_ok=True)
        mesh = self.mesh().detach()
        mesh = Mesh(mesh.vertices.cpu(), mesh.faces.cpu(), mesh.vertex_colors.cpu())
        for fmt in formats:
            export_mesh(mesh, out_dir / f"mesh.{fmt}")
        azimuth = torch.arange(turntable_frames, dtype=torch.float32) * (360.0 / turntable_frames)
        cams = orbit_cameras(
            turntable_elevation_deg,
            azimuth,
            turntable_distance,
            turntable_fovy_deg,
            turntable_size,
        )
        device = self.dmtet_initialized.device
        renders = self.render_mesh(mesh.to(device), cams.to(device), soft=False)
        save_turntable(renders["rgb"].cpu(), out_dir / "turntable.gif")
        return mesh
