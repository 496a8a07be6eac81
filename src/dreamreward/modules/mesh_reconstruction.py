"""Reconstruct a mesh from multi-view images: NeRF stage, then DMTet stage initialised from it.

This is the renderer's end-to-end regression job (``configs/render/fit_mesh.yaml``) on the same
two-stage asset DreamFL optimises (:class:`~dreamreward.modules.two_stage.TwoStageAssetModule`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from dreamreward.data.mesh_views import sample_training_batch
from dreamreward.modules.two_stage import TwoStageAssetModule
from dreamreward.modules.two_stage_settings import AssetExport, AssetOptimization, MeshStage
from dreamreward.render.background import Background
from dreamreward.render.cameras import Cameras
from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.export import save_image_grid
from dreamreward.render.metrics import mesh_metrics, psnr
from dreamreward.render.nerf import NeRFField
from dreamreward.render.volume import VolumeRenderer


class MeshReconstructionModule(TwoStageAssetModule):
    """Two-stage multi-view reconstruction.

    Stage 1 (``global_step < nerf_steps``): fit the NeRF field to random rays (colour MSE plus
    opacity vs. mask). Stage 2: initialise DMTet from the field's density level
    ``isosurface_threshold`` (Magic3D's ``create_from``) and refine SDF, deformation and the
    colour field through the rasterizer on whole views (colour MSE, soft-silhouette MSE,
    normal consistency). At the end the mesh is exported (GLB/OBJ), a turntable GIF is written
    and the mesh is compared to the reference (Chamfer, volume IoU) when the datamodule has one.

    Args:
        field: the NeRF field (density + colour).
        volume_renderer: renders the field.
        dmtet: the stage-2 geometry.
        background: colour behind the object (white by default).
        nerf_steps: steps of stage 1; the rest of ``trainer.max_steps`` is stage 2.
        rays_per_batch: random rays per NeRF step.
        views_per_batch: whole views per DMTet step.
        seed: seed of the per-step sampling (rays, views, jitter), keyed by the global step so
            a resumed run continues exactly as the uninterrupted one.
        optimization: learning rates of the grid encoding, the MLPs, DMTet.
        opacity_weight: weight of the stage-1 opacity-vs-mask loss.
        silhouette_weight: weight of the stage-2 soft-silhouette loss.
        mesh_stage: the density level that becomes the DMTet surface, the stage-2
            rasterization (supersampled and box filtered, i.e. antialiased like the volume
            renders and the reference images; soft silhouette width) and mesh regularisers.
        export: mesh files and the turntable GIF written at the end.
    """

    def __init__(
        self,
        field: NeRFField,
        volume_renderer: VolumeRenderer,
        dmtet: DMTetGeometry,
        background: Background | None = None,
        nerf_steps: int = 600,
        rays_per_batch: int = 4096,
        views_per_batch: int = 4,
        seed: int = 0,
        optimization: AssetOptimization = AssetOptimization(),
        opacity_weight: float = 0.1,
        silhouette_weight: float = 1.0,
        mesh_stage: MeshStage = MeshStage(normal_consistency_weight=0.05),
        export: AssetExport = AssetExport(turntable_elevation_deg=20.0),
    ) -> None:
        super().__init__(
            field,
            volume_renderer,
            dmtet,
            background,
            nerf_steps,
            seed,
            optimization,
            mesh_stage,
            export,
        )
        self.save_hyperparameters(
            ignore=["field", "volume_renderer", "dmtet", "background", *self.GROUPS]
        )
        self.save_group_hparams()
        self.check_settings()

    # ------------------------------------------------------------------ helpers
    def _cameras(self, batch: dict[str, Tensor]) -> Cameras:
        _, h, w, _ = batch["rgb"].shape
        return Cameras(batch["c2w"], batch["fovy"], w, h)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        batch = sample_training_batch(
            batch,
            self.hparams.rays_per_batch,
            self.hparams.views_per_batch,
            self._step_generator(0),
        )
        if self.in_mesh_stage:
            loss, logs = self._mesh_step(batch)
        else:
            loss, logs = self._nerf_step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss at step {self.global_step} ({logs}); the last "
                "checkpoint in the run's checkpoints/ folder is the last good state"
            )
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True)
        self.log("train/stage", float(self.in_mesh_stage) + 1.0)
        return loss

    def _nerf_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        # Sample jitter from a generator keyed by the step: a resumed run draws the same jitter
        # (Lightning checkpoints do not store the global RNG state).
        jitter = self._step_generator(1)
        out = self.asset.render_rays(batch["rays_o"], batch["rays_d"], jitter)
        mse = F.mse_loss(out["rgb"], batch["rays_rgb"])
        opacity = F.mse_loss(out["opacity"], batch["rays_mask"])
        loss = mse + self.hparams.opacity_weight * opacity
        samples = out["samples_evaluated"].float() / batch["rays_o"].shape[0]
        return loss, {
            "loss": loss.detach(),
            "psnr": -10 * torch.log10(mse.detach()),
            "samples_per_ray": samples,
        }

    def _mesh_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        mesh = self.current_mesh()
        out = self.asset.render_mesh(mesh, self._cameras(batch), soft=True)
        mse = F.mse_loss(out["rgb"], batch["rgb"])
        silhouette = F.mse_loss(out["alpha"], batch["mask"])
        loss = mse + self.hparams.silhouette_weight * silhouette + self.mesh_regularization(mesh)
        return loss, {
            "loss": loss.detach(),
            "psnr": -10 * torch.log10(mse.detach()),
            "faces": torch.tensor(float(mesh.num_faces)),
        }

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Render the batch's cameras with the current representation and save a PNG grid.

        Returns:
            (N, H, W, 3) renders.
        """
        pred = self.asset.render(self._cameras(batch))
        path = self._log_dir() / "predictions" / f"views_{batch_idx:04d}.png"
        save_image_grid(pred, path, ncols=pred.shape[0])
        return pred

    @torch.no_grad()
    def _evaluate(self, batch: dict[str, Tensor], split: str) -> None:
        if self.in_mesh_stage:
            self.start_mesh_stage()
        pred = self.asset.render(self._cameras(batch))
        value = psnr(pred, batch["rgb"]).mean()
        self.log(f"{split}/psnr", value, prog_bar=True, batch_size=pred.shape[0])
        grid = torch.cat([batch["rgb"], pred], dim=0)  # targets on the first row
        self._log_image(f"{split}/target_vs_render", grid, ncols=pred.shape[0])

    # ------------------------------------------------------------------ export
    def on_train_end(self) -> None:
        if not self.in_mesh_stage:
            # stopped in stage 1 (max_steps <= nerf_steps): there is no fitted mesh to export,
            # and initialising one from a half-trained field would fail after the run
            rank_zero_warn(
                f"the run ended at step {self.global_step}, before the mesh stage (model."
                f"nerf_steps={self.nerf_steps}): no mesh exported. Resume from its last.ckpt "
                "with a larger --trainer.max_steps to fit and export the mesh"
            )
            return
        if self.trainer.is_global_zero:
            self.export_results(self._log_dir())

    @torch.no_grad()
    def export_results(self, out_dir: Path) -> dict[str, float]:
        """Write the final mesh (GLB/OBJ), a turntable GIF and ``metrics.json`` to ``out_dir``."""
        mesh = self.export_asset(out_dir)
        metrics: dict[str, float] = {"mesh/faces": float(mesh.num_faces)}
        datamodule = getattr(self._trainer, "datamodule", None)
        reference = getattr(datamodule, "reference_mesh", None)
        if reference is not None:
            found = mesh_metrics(mesh, reference)
            metrics.update({f"mesh/{k}": float(v) for k, v in found.items()})
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.global_step)
        return metrics
