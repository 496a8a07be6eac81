"""The LightningModule base of reconstruction and DreamFL: one two-stage asset, optimised.

The asset (:class:`~dreamreward.render.two_stage_asset.TwoStageAsset`: a NeRF, then a DMTet mesh
made from its density) renders, meshes and exports itself; this base decides when the stage
changes (``global_step >= nerf_steps``), and owns the optimizer groups, per-step generators,
the mesh regulariser, image logging and the export settings. What supervises the renders
(reference images, score distillation) is the subclass's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from dreamreward.modules.two_stage_settings import (
    AssetExport,
    AssetOptimization,
    MeshStage,
    group_as_hparams,
    group_legacy_hparams,
    settings_group,
)
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

    The base takes the settings it reads as typed groups
    (:mod:`~dreamreward.modules.two_stage_settings`); subclasses declare them as constructor
    arguments with their own defaults, call ``save_hyperparameters`` ignoring them, and then
    :meth:`save_group_hparams` so checkpoints store them as plain dicts.

    Args:
        field: the NeRF field (density + colour).
        volume_renderer: renders the field.
        dmtet: the stage-2 geometry.
        background: colour behind the object (white by default).
        nerf_steps: steps of stage 1; the rest of ``trainer.max_steps`` is stage 2.
        seed: keys every per-step random draw (a resumed run continues exactly).
        optimization: the learning rates.
        mesh_stage: the isosurface that starts stage 2, its rasterization and regularisers.
        export: the mesh files and turntable written at the end.
    """

    GROUPS = ("optimization", "mesh_stage", "export")

    def __init__(
        self,
        field: NeRFField,
        volume_renderer: VolumeRenderer,
        dmtet: DMTetGeometry,
        background: Background | None,
        nerf_steps: int,
        seed: int,
        optimization: AssetOptimization | Mapping[str, Any],
        mesh_stage: MeshStage | Mapping[str, Any],
        export: AssetExport | Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.optimization = settings_group(AssetOptimization, optimization, "optimization")
        self.mesh_stage = settings_group(MeshStage, mesh_stage, "mesh_stage")
        self.export = settings_group(AssetExport, export, "export")
        self.asset = TwoStageAsset(
            field,
            volume_renderer,
            dmtet,
            background,
            self.mesh_stage.isosurface_threshold,
            self.mesh_stage.supersample,
            self.mesh_stage.soft_sigma,
        )
        self.nerf_steps = nerf_steps
        self.seed = seed
        # checkpoints written before the asset object name its parts at the top level
        self._register_load_state_dict_pre_hook(_legacy_asset_keys)

    def save_group_hparams(self) -> None:
        """Store the groups in ``hparams`` as plain dicts (call after ``save_hyperparameters``
        with the groups ignored): checkpoints and ``hparams.yaml`` hold no custom classes, and
        ``load_from_checkpoint`` passes the dicts back to the constructor."""
        self.hparams.update({name: group_as_hparams(getattr(self, name)) for name in self.GROUPS})

    def check_settings(self) -> None:
        """Refuse flat settings that would fail (or silently do nothing) only once training
        runs: call after ``save_hyperparameters``. Checks the hyper-parameters present by name
        (the groups check themselves)."""
        hp = self.hparams
        problems = []
        for name, value in hp.items():
            if name.endswith("_resolution"):
                ok = isinstance(value, int) and value >= 1
                need = "an integer >= 1"
            elif name.endswith("_weight") or name == "nerf_steps":
                ok = isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
                need = "a finite number >= 0"
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
        """Normal consistency and Laplacian smoothing, weighted as ``mesh_stage`` says."""
        settings = self.mesh_stage
        loss = mesh.vertices.new_zeros(())
        if settings.normal_consistency_weight > 0:
            loss = loss + settings.normal_consistency_weight * normal_consistency_loss(
                mesh.vertices, mesh.faces
            )
        if settings.laplacian_weight > 0:
            loss = loss + settings.laplacian_weight * laplacian_smoothing_loss(
                mesh.vertices, mesh.faces
            )
        return loss

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # checkpoints from before the asset object / the typed groups, read as today's
        _legacy_asset_keys(checkpoint.get("state_dict", {}))
        group_legacy_hparams(checkpoint.get("hyper_parameters", {}))

    # ------------------------------------------------------------------ training helpers
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the NeRF's occupancy grid follows the step (a resumed run updates on the same steps)
        if not self.in_mesh_stage:
            gen = torch.Generator().manual_seed(self.global_step)
            self.asset.update_occupancy(self.global_step, gen)

    def _step_generator(self, stream: int) -> torch.Generator:
        """A CPU generator for this step; ``stream`` separates independent draws."""
        seed = (self.seed * 1_000_003 + self.global_step) * 4 + stream
        return torch.Generator().manual_seed(seed)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr = self.optimization
        asset = self.asset
        grid = list(asset.field.encoding.parameters())
        grid_ids = {id(p) for p in grid}
        mlps = [p for p in asset.field.parameters() if id(p) not in grid_ids]
        mlps += list(asset.background.parameters())
        groups = [
            {"params": grid, "lr": lr.lr_grid},
            {"params": mlps, "lr": lr.lr_mlp},
            {"params": list(asset.dmtet.parameters()), "lr": lr.lr_dmtet},
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
        """Write the final mesh (``export.formats``) and a turntable GIF; returns the CPU mesh."""
        settings = self.export
        return self.asset.export(
            out_dir,
            settings.formats,
            settings.turntable_frames,
            settings.turntable_size,
            settings.turntable_elevation_deg,
            settings.turntable_distance,
            settings.turntable_fovy_deg,
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
