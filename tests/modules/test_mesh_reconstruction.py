"""The renderer's end-to-end regression job at tiny scale: NeRF -> DMTet -> export + metrics."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import trimesh

from dreamreward.data.mesh_views import MultiViewMeshDataModule
from dreamreward.modules.mesh_reconstruction import MeshReconstructionModule
from dreamreward.modules.two_stage_settings import AssetExport, AssetOptimization, MeshStage
from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.encoding import MultiResolutionGridEncoding
from dreamreward.render.nerf import NeRFField
from dreamreward.render.occupancy import OccupancyGrid
from dreamreward.render.volume import VolumeRenderer


@pytest.fixture(scope="module")
def sphere_ply(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mesh") / "ball.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=1.0).export(path)
    return path


def _datamodule(mesh, **kwargs) -> MultiViewMeshDataModule:
    args = dict(
        mesh=str(mesh),
        image_size=24,
        num_train_views=8,
        num_val_views=2,
        batches_per_epoch=20,
    )
    args.update(kwargs)
    return MultiViewMeshDataModule(**args)


def _module(**kwargs) -> MeshReconstructionModule:
    field = NeRFField(
        blob_density=10.0,
        blob_radius=0.6,
        hidden_dim=16,
        encoding=MultiResolutionGridEncoding(num_levels=2, base_resolution=8, max_resolution=16),
    )
    renderer = VolumeRenderer(
        num_samples_per_ray=32,
        grid_warmup_steps=4,
        grid_update_interval=4,
        occupancy_grid=OccupancyGrid(resolution=16, density_threshold=0.5),
    )
    args = dict(
        nerf_steps=60,
        rays_per_batch=768,
        views_per_batch=2,
        mesh_stage=MeshStage(isosurface_threshold=4.0, normal_consistency_weight=0.05),
        export=AssetExport(turntable_frames=3, turntable_size=24, turntable_elevation_deg=20.0),
        optimization=AssetOptimization(lr_grid=3e-2, lr_mlp=1e-2),
    )
    args.update(kwargs)
    return MeshReconstructionModule(field, renderer, DMTetGeometry(grid_resolution=16), **args)


def test_datamodule_renders_views(sphere_ply):
    dm = _datamodule(sphere_ply)
    dm.setup()
    views = dm.train_views
    assert views["rgb"].shape == (8, 24, 24, 3)
    assert views["mask"].shape == (8, 24, 24, 1)
    assert views["rays_o"].shape == (8 * 24 * 24, 3)
    coverage = views["mask"].mean()
    assert 0.05 < float(coverage) < 0.6
    assert float(views["rgb"].min()) >= 0 and float(views["rgb"].max()) <= 1
    # antialiased edges: fractional coverage exists
    assert bool(((views["mask"] > 0) & (views["mask"] < 1)).any())
    from dreamreward.data.mesh_views import sample_training_batch

    full = dm.train_dataloader().dataset[3]
    batch = sample_training_batch(full, 100, 2, torch.Generator().manual_seed(4))
    again = sample_training_batch(full, 100, 2, torch.Generator().manual_seed(4))
    torch.testing.assert_close(batch["rays_o"], again["rays_o"])
    assert batch["rgb"].shape == (2, 24, 24, 3) and batch["rays_rgb"].shape == (100, 3)


def test_bundled_ant_is_rotated_upright():
    dm = MultiViewMeshDataModule(mesh="ant.ply", up_axis="y", image_size=16, num_train_views=2)
    dm.setup()
    extent = dm.reference_mesh.vertices.amax(0) - dm.reference_mesh.vertices.amin(0)
    assert float(extent[2]) < float(extent[0])  # flat along the new Z (up)


def test_datamodule_errors(tmp_path):
    with pytest.raises(ValueError, match="up_axis"):
        MultiViewMeshDataModule(up_axis="x")
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        _datamodule(tmp_path / "missing.ply").setup()


def _quiet_trainer(root, max_steps: int, **kwargs) -> L.Trainer:
    """A CPU trainer for these tests: no logger, bars or model summary."""
    return L.Trainer(
        max_steps=max_steps,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_fit_exports_mesh_turntable_and_metrics(sphere_ply, tmp_path):
    L.seed_everything(0)
    dm = _datamodule(sphere_ply)
    module = _module()
    trainer = _quiet_trainer(
        tmp_path,
        80,
        val_check_interval=40,
        check_val_every_n_epoch=None,
        enable_checkpointing=False,
    )
    trainer.fit(module, dm)
    assert module.asset.has_mesh
    assert "asset.dmtet_initialized" in module.state_dict()  # a resumed run keeps its stage
    out = Path(trainer.log_dir)
    for name in ("mesh.glb", "mesh.obj", "turntable.gif", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"mesh/chamfer", "mesh/iou", "mesh/fscore", "mesh/faces"}
    # measured: IoU 0.76, Chamfer 0.042 (the initial blob alone scores IoU ~0.3)
    assert metrics["mesh/iou"] > 0.5, metrics
    assert metrics["mesh/chamfer"] < 0.08, metrics
    assert trimesh.load(out / "mesh.obj").faces.shape[0] == metrics["mesh/faces"]
    assert trainer.callback_metrics["val/psnr"] > 15


def test_unreachable_isosurface_gives_clear_error(sphere_ply):
    module = _module(mesh_stage=MeshStage(isosurface_threshold=1e6))
    with pytest.raises(RuntimeError, match="isosurface_threshold"):
        module.asset.mesh()


def test_resume_keeps_the_stage_and_predict_renders(sphere_ply, tmp_path):
    def trainer(max_steps):
        return _quiet_trainer(tmp_path, max_steps, limit_val_batches=0, enable_checkpointing=True)

    L.seed_everything(0)
    first = trainer(70)
    module = _module()
    first.fit(module, _datamodule(sphere_ply))
    ckpt = first.checkpoint_callback.best_model_path or first.checkpoint_callback.last_model_path
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert bool(state["asset.dmtet_initialized"])  # saved in stage 2

    resumed = _module()
    second = trainer(75)
    second.fit(resumed, _datamodule(sphere_ply), ckpt_path=ckpt)
    assert second.global_step == 75
    assert resumed.asset.has_mesh
    # the resumed DMTet continued from the saved SDF instead of re-initialising from density
    drift = (resumed.asset.dmtet.sdf.detach() - state["asset.dmtet.sdf"]).abs().max()
    assert float(drift) < 0.05

    renders = second.predict(resumed, _datamodule(sphere_ply))
    assert renders[0].shape == (2, 24, 24, 3)


def test_resumed_run_equals_uninterrupted_run(sphere_ply, tmp_path):
    """Interrupt mid-epoch in stage 1, resume past the NeRF -> DMTet switch: bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-threaded scatter sums are not bit-reproducible
    try:

        def fit(max_steps, root, ckpt_path=None):
            L.seed_everything(0)
            module = _module()
            trainer = _quiet_trainer(root, max_steps, limit_val_batches=0)
            trainer.fit(module, _datamodule(sphere_ply), ckpt_path=ckpt_path)
            return module, trainer

        straight, _ = fit(75, tmp_path / "straight")
        _, first = fit(45, tmp_path / "interrupted")  # 45 = mid-epoch (20 batches per epoch)
        resumed, second = fit(
            75,
            tmp_path / "interrupted",
            ckpt_path=first.checkpoint_callback.last_model_path
            or first.checkpoint_callback.best_model_path,
        )
    finally:
        torch.set_num_threads(threads)
    assert second.global_step == 75
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_run_stopped_in_stage_one_warns_and_keeps_its_checkpoint(sphere_ply, tmp_path):
    """max_steps <= nerf_steps: no half-made mesh is forced out of the field after the run
    (it used to fail there, with a traceback); the run's checkpoint stays to resume from."""
    module = _module()
    trainer = _quiet_trainer(tmp_path, 2, limit_val_batches=0)
    with pytest.warns(UserWarning, match="before the mesh stage .* no mesh exported"):
        trainer.fit(module, _datamodule(sphere_ply))
    assert not (tmp_path / "metrics.json").exists()
    assert list(tmp_path.rglob("*.ckpt"))  # something to resume from


def test_a_checkpoint_from_before_the_asset_object_loads(sphere_ply):
    """Runs saved when the module held field / dmtet / ... at its top level still load."""
    module = _module()
    legacy = {k.removeprefix("asset."): v.clone() for k, v in module.state_dict().items()}
    assert any(k.startswith("field.") for k in legacy)
    legacy["dmtet_initialized"] = torch.ones((), dtype=torch.bool)
    other = _module()
    other.load_state_dict(legacy)
    assert other.asset.has_mesh
    checkpoint = {"state_dict": dict(legacy)}
    other.on_load_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(module.state_dict())
