"""CUDA smoke tests (skipped without a GPU): the renderer and the world run on the device."""

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_render_pipeline_on_cuda():
    from dreamreward.render.background import SolidBackground
    from dreamreward.render.cameras import orbit_cameras
    from dreamreward.render.dmtet import DMTetGeometry
    from dreamreward.render.mesh_render import render_mesh
    from dreamreward.render.nerf import NeRFField
    from dreamreward.render.occupancy import OccupancyGrid
    from dreamreward.render.volume import VolumeRenderer

    device = torch.device("cuda")
    cams = orbit_cameras(20.0, torch.tensor([0.0, 90.0]), 2.2, 45.0, 32).to(device)
    field = NeRFField().to(device)
    renderer = VolumeRenderer(32, OccupancyGrid()).to(device)
    renderer.update_occupancy(field, step=renderer.grid_warmup_steps)
    out = renderer.render_cameras(field, SolidBackground().to(device), cams)
    assert out["rgb"].device.type == "cuda" and torch.isfinite(out["rgb"]).all()
    dmtet = DMTetGeometry(16, backend="torch").to(device)
    mesh = dmtet.extract_mesh()
    images = render_mesh(mesh, cams, soft_sigma=1.0, backend="torch")
    images["alpha"].sum().backward()
    assert dmtet.sdf.grad is not None and torch.isfinite(dmtet.sdf.grad).all()


def test_world_renders_on_cuda():
    from dreamreward.world.layout import scene_mesh
    from dreamreward.world.scene import Scene, SceneObject
    from dreamreward.world.views import default_cameras, render_views

    device = torch.device("cuda")
    scene = Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "on top of")
    mesh, index = scene_mesh(scene)
    out = render_views(mesh.to(device), default_cameras(32).to(device), index.to(device))
    cpu = render_views(mesh, default_cameras(32), index)
    torch.testing.assert_close(out["rgb"].cpu(), cpu["rgb"], atol=2e-3, rtol=0)
