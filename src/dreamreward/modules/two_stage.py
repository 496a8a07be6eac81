"""The two-stage 3D asset shared by reconstruction and DreamFL: NeRF first, then DMTet.

Magic3D/threestudio's geometry pipeline: a NeRF field is optimised at low resolution
(``global_step < nerf_steps``), then DMTet is initialised from the field's density level
``isosurface_threshold`` (Magic3D's ``create_from``) and refined through the rasterizer, with the
field's colour branch giving vertex colours. What supervises the renders (reference images,
score distillation) is the subclass's business; this base owns the representation, its
rendering, the optimizer groups, per-step generators, image logging and mesh export.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from dreamreward.render.background import Background, SolidBackground
from dreamreward.render.cameras import Cameras, orbit_cameras
from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.export import export_mesh, save_image_grid, save_turntable
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_ops import laplacian_smoothing_loss, normal_consistency_loss
from dreamreward.render.mesh_render import render_mesh_antialiased
from dreamreward.render.nerf import NeRFField
from dreamreward.render.volume import VolumeRenderer


class TwoStageAssetModule(L.LightningModule):
    """NeRF -> DMTet asset (see the module docstring); subclasses add the losses.

    Subclasses call ``save_hyperparameters`` with these arguments among theirs; the base reads
    ``self.hparams`` for the rendering and export settings.

    Args:
        field: the NeRF field (density + colour).
        volume_renderer: renders the field.
        dmtet: the stage-2 geometry.
        background: colour behind the object (white by default).
        nerf_steps: steps of stage 1; the rest of ``trainer.max_steps`` is stage 2.
        isosurface_threshold: the density level that becomes the DMTet surface.
    """

    def __init__(
        self,
        field: NeRFField,
        volume_renderer: VolumeRenderer,
        dmtet: DMTetGeometry,
        background: Background | None,
        nerf_steps: int,
        isosurface_threshold: float,
    ) -> None:
        super().__init__()
        self.field = field
        self.volume_renderer = volume_renderer
        self.dmtet = dmtet
        self.background = background or SolidBackground()
        self.nerf_steps = nerf_steps
        self.isosurface_threshold = isosurface_threshold
        # Saved in checkpoints: a run resumed in stage 2 must not re-initialise DMTet.
        self.register_buffer("dmtet_initialized", torch.zeros((), dtype=torch.bool))

    def check_settings(self) -> None:
        """Refuse settings that would fail (or silently do nothing) only once training runs:
        call after ``save_hyperparameters``. Checks the hyper-parameters present by name."""
        hp = self.hparams
        problems = []
        for name, value in hp.items():
            if name.endswith("_resolution") or name in ("turntable_size", "mesh_supersample"):
                ok = isinstance(value, int) and value >= 1
                need = "an integer >= 1"
            elif name.startswith("lr_"):
                ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
                need = "a finite number > 0"
            elif name.endswith("_weight") or name in ("nerf_steps", "turntable_frames"):
                ok = isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
                need = "a finite number >= 0"
            elif name == "isosurface_threshold":
                ok = isinstance(value, (int, float)) and math.isfinite(value)
                need = "a finite number"
            else:
                continue
            if not ok:
                problems.append(f"model.{name} must be {need}, got {value!r}")
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))

    # ------------------------------------------------------------------ representation
    @property
    def in_mesh_stage(self) -> bool:
        return self.global_step >= self.nerf_steps

    def _ensure_dmtet(self) -> None:
        if bool(self.dmtet_initialized):
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
                    "the box): lower the learning rates or raise model.isosurface_threshold"
                )
            else:
                advice = (
                    f"lower model.isosurface_threshold or raise model.nerf_steps (now "
                    f"{self.nerf_steps})"
                )
            raise RuntimeError(f"cannot initialise DMTet: {where}; {advice}")
        self.dmtet_initialized.fill_(True)

    def current_mesh(self) -> Mesh:
        """The stage-2 mesh with vertex colours from the colour field (differentiable)."""
        self._ensure_dmtet()
        mesh = self.dmtet.extract_mesh()
        return Mesh(mesh.vertices, mesh.faces, self.field.color(mesh.vertices))

    def mesh_regularization(self, mesh: Mesh) -> Tensor:
        """Normal consistency and Laplacian smoothing, weighted by the hyperparameters."""
        hp = self.hparams
        loss = mesh.vertices.new_zeros(())
        if hp.normal_consistency_weight > 0:
            loss = loss + hp.normal_consistency_weight * normal_consistency_loss(
                mesh.vertices, mesh.faces
            )
        if hp.laplacian_weight > 0:
            loss = loss + hp.laplacian_weight * laplacian_smoothing_loss(mesh.vertices, mesh.faces)
        return loss

    # ------------------------------------------------------------------ rendering
    def render_mesh_views(self, mesh: Mesh, cameras: Cameras, soft: bool) -> dict[str, Tensor]:
        """Rasterize ``mesh`` (supersampled, box filtered) over the background.

        Returns:
            dict with ``rgb`` (N, H, W, 3), ``alpha`` (N, H, W, 1) (soft if ``soft``) and
            ``mask`` (N, H, W, 1) coverage.
        """
        return render_mesh_antialiased(
            mesh,
            cameras,
            self.background,
            self.hparams.mesh_supersample,
            self.hparams.soft_sigma if soft else None,
        )

    def render_views(self, cameras: Cameras) -> Tensor:
        """(N, H, W, 3) renders with the current stage's representation."""
        if bool(self.dmtet_initialized):
            return self.render_mesh_views(self.current_mesh(), cameras, soft=False)["rgb"]
        return self.volume_renderer.render_cameras(self.field, self.background, cameras)["rgb"]

    # ------------------------------------------------------------------ training helpers
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the NeRF's occupancy grid follows the step (a resumed run updates on the same steps)
        if not self.in_mesh_stage:
            gen = torch.Generator().manual_seed(self.global_step)
            self.volume_renderer.update_occupancy(self.field, self.global_step, gen)

    def _step_generator(self, stream: int) -> torch.Generator:
        """A CPU generator for this step; ``stream`` separates independent draws."""
        seed = (self.hparams.seed * 1_000_003 + self.global_step) * 4 + stream
        return torch.Generator().manual_seed(seed)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        grid = list(self.field.encoding.parameters())
        grid_ids = {id(p) for p in grid}
        mlps = [p for p in self.field.parameters() if id(p) not in grid_ids]
        mlps += list(self.background.parameters())
        groups = [
            {"params": grid, "lr": hp.lr_grid},
            {"params": mlps, "lr": hp.lr_mlp},
            {"params": list(self.dmtet.parameters()), "lr": hp.lr_dmtet},
        ]
        groups = [g for g in groups if g["params"]]
        # Instant-NGP/threestudio settings; eps small because grid gradients are tiny.
        return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)

    # ------------------------------------------------------------------ logging + export
    def _log_image(self, tag: str, images: Tensor, ncols: int) -> None:
        if self._trainer is not None and not self.trainer.is_global_zero:
            return  # one writer on multi-device runs
        log_dir = self._log_dir()
        path = save_image_grid(
            images,
            log_dir / "images" / f"{tag.replace('/', '_')}_{self.global_step:06d}.png",
            ncols=ncols,
        )
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            import numpy as np
            from PIL import Image

            array = np.asarray(Image.open(path).convert("RGB"))
            experiment.add_image(tag, array, self.global_step, dataformats="HWC")

    def _log_dir(self) -> Path:
        trainer = self._trainer
        directory = trainer.log_dir if trainer is not None and trainer.log_dir else "."
        return Path(directory)

    @torch.no_grad()
    def export_asset(self, out_dir: Path) -> Mesh:
        """Write the final mesh (``export_formats``) and a turntable GIF; returns the CPU mesh."""
        out_dir.mkdir(parents=True, exist_ok=True)
        mesh = self.current_mesh().detach()
        mesh = Mesh(mesh.vertices.cpu(), mesh.faces.cpu(), mesh.vertex_colors.cpu())
        for fmt in self.hparams.export_formats:
            export_mesh(mesh, out_dir / f"mesh.{fmt}")
        hp = self.hparams
        frames = hp.turntable_frames
        azimuth = torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
        cams = orbit_cameras(
            hp.turntable_elevation_deg,
            azimuth,
            hp.turntable_distance,
            hp.turntable_fovy_deg,
            hp.turntable_size,
        )
        renders = self.render_mesh_views(mesh.to(self.device), cams.to(self.device), soft=False)
        save_turntable(renders["rgb"].cpu(), out_dir / "turntable.gif")
        return mesh
