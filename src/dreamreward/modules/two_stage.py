"""The LightningModule base of reconstruction and DreamFL: one two-stage asset, optimised.

The asset (:class:`~dreamreward.render.two_stage_asset.TwoStageAsset`: a NeRF, then a DMTet mesh
made from its density) renders, meshes and exports itself; this base decides when the stage
changes (``global_step >= nerf_steps``), and owns the optimizer groups, per-step generators,
the mesh regulariser, image logging and the export settings. What supervises the renders
(reference images, score distillation) is the subclass's business.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from dreamreward.render.background import Background
from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.export import save_image_grid
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_ops import laplacian_smoothing_loss, normal_consistency_loss
from dreamreward.render.nerf import NeRFField
from dreamreward.render.two_stage_asset import TwoStageAsset
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
        mesh_supersample, soft_sigma: the mesh stage's rasterization (see
            :class:`~dreamreward.render.two_stage_asset.TwoStageAsset`).
    """

    def __init__(
        self,
        field: NeRFField,
        volume_renderer: VolumeRenderer,
        dmtet: DMTetGeometry,
        background: Background | None,
        nerf_steps: int,
        isosurface_threshold: float,
        mesh_supersample: int = 2,
        soft_sigma: float = 1.0,
    ) -> None:
        super().__init__()
        self.asset = TwoStageAsset(
            field,
            volume_renderer,
            dmtet,
            background,
            isosurface_threshold,
            mesh_supersample,
            soft_sigma,
        )
        self.nerf_steps = nerf_steps
        # checkpoints written before the asset object name its parts at the top level
        self._register_load_state_dict_pre_hook(_legacy_asset_keys)

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

    def start_mesh_stage(self) -> None:
        """Start the asset's mesh stage (DMTet from the NeRF's density); a failure also names
        this run's ``nerf_steps``, which the asset cannot know and the advice may point at."""
        try:
            self.asset.start_mesh_stage()
        except RuntimeError as error:
            raise RuntimeError(
                f"{error} (model.nerf_steps={self.nerf_steps}; the mesh stage started at step "
                f"{self.global_step})"
            ) from error

    def current_mesh(self) -> Mesh:
        """The asset's stage-2 mesh (see :meth:`start_mesh_stage` for a failed start)."""
        self.start_mesh_stage()
        return self.asset.mesh()

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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        _legacy_asset_keys(checkpoint.get("state_dict", {}))

    # ------------------------------------------------------------------ training helpers
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the NeRF's occupancy grid follows the step (a resumed run updates on the same steps)
        if not self.in_mesh_stage:
            gen = torch.Generator().manual_seed(self.global_step)
            self.asset.update_occupancy(self.global_step, gen)

    def _step_generator(self, stream: int) -> torch.Generator:
        """A CPU generator for this step; ``stream`` separates independent draws."""
        seed = (self.hparams.seed * 1_000_003 + self.global_step) * 4 + stream
        return torch.Generator().manual_seed(seed)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        asset = self.asset
        grid = list(asset.field.encoding.parameters())
        grid_ids = {id(p) for p in grid}
        mlps = [p for p in asset.field.parameters() if id(p) not in grid_ids]
        mlps += list(asset.background.parameters())
        groups = [
            {"params": grid, "lr": hp.lr_grid},
            {"params": mlps, "lr": hp.lr_mlp},
            {"params": list(asset.dmtet.parameters()), "lr": hp.lr_dmtet},
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

    def export_asset(self, out_dir: Path) -> Mesh:
        """Write the final mesh (``export_formats``) and a turntable GIF; returns the CPU mesh."""
        hp = self.hparams
        return self.asset.export(
            out_dir,
            hp.export_formats,
            hp.turntable_frames,
            hp.turntable_size,
            hp.turntable_elevation_deg,
            hp.turntable_distance,
            hp.turntable_fovy_deg,
        )


_ASSET_PARTS = ("field.", "volume_renderer.", "dmtet.", "background.", "dmtet_initialized")


def _legacy_asset_keys(state_dict: dict[str, Any], prefix: str = "", *args: object) -> None:
    """Rename a pre-asset checkpoint's keys (``field.*`` ...) to the asset's (``asset.field.*``)
    in place, so runs saved before the asset object resume and load (a ``load_state_dict``
    pre-hook, and called on a checkpoint before the resume checks compare its keys)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix) :]
        if local.startswith(_ASSET_PARTS):
            state_dict[f"{prefix}asset.{local}"] = state_dict.pop(key)
