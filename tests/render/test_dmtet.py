"""DMTetGeometry: parameters, gradients, initialisation and errors."""

from __future__ import annotations

import pytest
import torch

from dreamreward.render.dmtet import DMTetGeometry
from dreamreward.render.mesh import Mesh


def test_default_geometry_is_a_sphere_mesh():
    geometry = DMTetGeometry(grid_resolution=8, radius=1.0)
    mesh = geometry()
    assert isinstance(mesh, Mesh) and mesh.num_faces > 0
    radii = mesh.vertices.norm(dim=-1)
    assert radii.min().item() > 0.4 and radii.max().item() < 0.6
    assert geometry.cell_size == pytest.approx(0.25)
    assert "grid_resolution=8" in repr(geometry)


def test_gradients_reach_sdf_and_deformation():
    geometry = DMTetGeometry(grid_resolution=6, deformation_scale=0.25)
    mesh = geometry.extract_mesh()
    (mesh.vertices**2).sum().backward()
    assert geometry.sdf.grad is not None and bool(geometry.sdf.grad.abs().sum() > 0)
    assert geometry.deformation.grad is not None
    assert bool(geometry.deformation.grad.abs().sum() > 0)


def test_deformation_is_bounded_by_scale_times_cell():
    geometry = DMTetGeometry(grid_resolution=4, radius=2.0, deformation_scale=0.3)
    with torch.no_grad():
        geometry.deformation.fill_(1e3)
    offset = geometry.deformed_vertices() - geometry.grid_vertices
    assert offset.abs().max().item() == pytest.approx(0.3 * 1.0, rel=1e-5)  # cell = 4 / 4


def test_state_dict_holds_only_parameters():
    geometry = DMTetGeometry(grid_resolution=4)
    assert set(geometry.state_dict()) == {"sdf", "deformation"}
    other = DMTetGeometry(grid_resolution=4, init_radius=0.3)
    other.load_state_dict(geometry.state_dict())
    torch.testing.assert_close(other.sdf, geometry.sdf)


@pytest.mark.parametrize(("fill", "word"), [(1.0, "positive"), (-1.0, "negative")])
def test_empty_surface_raises(fill, word):
    geometry = DMTetGeometry(grid_resolution=3)
    with torch.no_grad():
        geometry.sdf.fill_(fill)
    with pytest.raises(RuntimeError, match=f"no surface crossing: all .* {word}"):
        geometry()


def test_initialize_from_density_reproduces_ball_radius():
    geometry = DMTetGeometry(grid_resolution=16, radius=1.0)
    with torch.no_grad():
        geometry.deformation.fill_(0.5)  # reset by the initialisation
    ball_radius, peak, threshold = 0.55, 20.0, 5.0

    def density(points):  # smooth ball: density == threshold exactly at |x| = ball_radius
        return peak * torch.exp(
            -((points.norm(dim=-1) / ball_radius) ** 2) * torch.log(torch.tensor(peak / threshold))
        )

    geometry.initialize_from_density(density, threshold=threshold, chunk_size=1000)
    assert not bool(geometry.deformation.any())
    assert geometry.sdf.min().item() >= -1.0 and geometry.sdf.max().item() <= 1.0
    centre_index = geometry.grid_vertices.norm(dim=-1).argmin()
    assert geometry.sdf[centre_index].item() < 0  # dense = inside = negative
    radii = geometry().vertices.norm(dim=-1)
    assert radii.mean().item() == pytest.approx(ball_radius, abs=0.01)
    assert (radii - ball_radius).abs().max().item() < 0.03


def test_initialize_from_density_threestudio_scaling():
    geometry = DMTetGeometry(grid_resolution=2)
    geometry.initialize_from_density(
        lambda p: torch.full((p.shape[0], 1), 4.5), 5.0, normalize=False
    )
    torch.testing.assert_close(geometry.sdf, torch.full_like(geometry.sdf, 0.5))
    geometry.initialize_from_density(lambda p: torch.full((p.shape[0],), 4.5), 5.0)
    torch.testing.assert_close(geometry.sdf, torch.full_like(geometry.sdf, 0.1))


def test_initialize_from_sdf_and_validation():
    geometry = DMTetGeometry(grid_resolution=4)
    geometry.initialize_from_sdf(lambda p: p.norm(dim=-1) - 0.7)
    torch.testing.assert_close(geometry.sdf, geometry.grid_vertices.norm(dim=-1) - 0.7)
    with pytest.raises(ValueError, match="sdf_fn must map"):
        geometry.initialize_from_sdf(lambda p: p)
    with pytest.raises(ValueError, match="NaN"):
        geometry.initialize_from_sdf(lambda p: torch.full((p.shape[0],), float("nan")))
    with pytest.raises(ValueError, match="threshold"):
        geometry.initialize_from_density(lambda p: p[:, 0], threshold=0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"grid_resolution": 0},
        {"radius": 0.0},
        {"deformation_scale": -1.0},
        {"backend": "cuda"},
        {"init_radius": 2.0},
    ],
)
def test_constructor_validates(kwargs):
    with pytest.raises(ValueError):
        DMTetGeometry(**kwargs)
