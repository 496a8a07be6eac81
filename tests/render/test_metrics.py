"""Image and mesh metrics: PSNR, surface sampling, Chamfer, winding numbers, IoU."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from dreamreward.render.mesh import Mesh, load_mesh
from dreamreward.render.metrics import (
    chamfer_distance,
    mesh_metrics,
    nearest_neighbor_distances,
    psnr,
    sample_surface,
    volume_iou,
)
from dreamreward.render.winding_number import winding_number


def to_mesh(tm: trimesh.Trimesh, offset=(0.0, 0.0, 0.0)) -> Mesh:
    vertices = torch.tensor(tm.vertices, dtype=torch.float32) + torch.tensor(offset)
    return Mesh(vertices, torch.tensor(tm.faces, dtype=torch.long))


def sphere(radius: float, subdivisions: int = 3) -> Mesh:
    return to_mesh(trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius))


def box(extents=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0)) -> Mesh:
    return to_mesh(trimesh.creation.box(extents=extents), offset)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------- psnr
def test_psnr_known_values():
    target = torch.full((3, 4, 5, 3), 0.5, dtype=torch.float64)
    pred = target.clone()
    pred[1] += 0.1  # MSE 0.01 -> 20 dB
    pred[2] -= 0.01  # MSE 1e-4 -> 40 dB
    out = psnr(pred, target)
    assert out.shape == (3,)
    assert math.isinf(out[0]) and out[0] > 0  # identical: +inf, no cap
    assert out[1].item() == pytest.approx(20.0, abs=1e-9)
    assert out[2].item() == pytest.approx(40.0, abs=1e-9)
    assert psnr(pred, target, max_val=10.0)[1].item() == pytest.approx(40.0, abs=1e-9)


def test_psnr_mask_restricts_the_error():
    target = torch.zeros(2, 4, 4, 3, dtype=torch.float64)
    pred = target.clone()
    pred[:, :2] = 0.1  # error only in the top half
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 2:] = True  # image 0: bottom half only -> no error
    mask[1] = True  # image 1: everything -> MSE 0.005
    out = psnr(pred, target, mask=mask)
    assert math.isinf(out[0])
    assert out[1].item() == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-9)
    with pytest.raises(ValueError, match="differ"):
        psnr(pred, target[:, :3])


# ---------------------------------------------------------------------------------- surfaces
def test_sample_surface_lies_on_the_surface_and_is_area_weighted():
    mesh = box(extents=(2.0, 1.0, 1.0))
    points = sample_surface(mesh, 20_000, generator=gen())
    assert points.shape == (20_000, 3)
    on_face = (points.abs() - torch.tensor([1.0, 0.5, 0.5])).abs().min(dim=1).values
    assert float(on_face.max()) < 1e-5
    # The two end caps (|x| = 1) hold 2 of the 10 units of area.
    caps = float(((points[:, 0].abs() - 1.0).abs() < 1e-5).float().mean())
    assert caps == pytest.approx(0.2, abs=0.015)
    torch.testing.assert_close(points, sample_surface(mesh, 20_000, generator=gen()))


def test_sample_surface_is_differentiable():
    mesh = sphere(1.0, subdivisions=1)
    mesh.vertices.requires_grad_(True)
    sample_surface(mesh, 100, generator=gen()).sum().backward()
    assert mesh.vertices.grad is not None and torch.isfinite(mesh.vertices.grad).all()


def test_chamfer_of_a_surface_with_itself_is_zero_and_differentiable():
    points = sample_surface(load_mesh("ant.ply").normalized(), 3000, generator=gen())
    assert chamfer_distance(points, points.clone()).item() == 0.0
    shifted = (points + torch.tensor([0.0, 0.0, 0.01])).requires_grad_(True)
    value = chamfer_distance(points, shifted, chunk=7)  # odd chunk: blocks do not divide P
    assert 0.0 < value.item() <= 0.01 + 1e-6
    value.backward()
    assert torch.isfinite(shifted.grad).all()


def test_chamfer_of_concentric_spheres_is_the_radius_difference():
    inner = sample_surface(sphere(0.5), 4000, generator=gen(1))
    outer = sample_surface(sphere(0.7), 4000, generator=gen(2))
    assert chamfer_distance(inner, outer).item() == pytest.approx(0.2, abs=0.01)
    d_in, d_out = nearest_neighbor_distances(inner, outer, chunk=1000)
    assert d_in.shape == (4000,) and d_out.shape == (4000,)
    assert float(d_in.min()) > 0.19


# --------------------------------------------------------------------------- winding number
@pytest.mark.parametrize("beta", [None, 2.0])
def test_winding_number_is_one_inside_zero_outside(beta):
    directions = torch.nn.functional.normalize(torch.randn(300, 3, generator=gen()), dim=-1)
    radii = torch.rand(300, 1, generator=gen(1))
    inside = directions * 0.85 * radii
    outside = directions * (1.15 + radii)
    mesh = sphere(1.0)
    w = winding_number(mesh, torch.cat([inside, outside]), beta=beta)
    assert w.shape == (600,)
    torch.testing.assert_close(w[:300], torch.ones(300), atol=0.03, rtol=0)
    torch.testing.assert_close(w[300:], torch.zeros(300), atol=0.03, rtol=0)
    # Reversed faces: the winding number flips sign.
    flipped = Mesh(mesh.vertices, mesh.faces.flip(-1))
    assert float(winding_number(flipped, inside[:10], beta=beta).mean()) == pytest.approx(-1, 0.03)


def test_winding_number_far_field_matches_the_exact_sum():
    mesh = box(extents=(1.0, 0.6, 0.3))
    ant = load_mesh("ant.ply").normalized()
    points = torch.rand(2000, 3, generator=gen()) * 2 - 1
    for m in (mesh, ant):
        exact = winding_number(m, points, beta=None)
        fast = winding_number(m, points, beta=2.0, chunk=500)
        assert float((exact - fast).abs().max()) < 0.05
        assert torch.equal(exact > 0.5, fast > 0.5)


def test_winding_number_is_robust_to_a_hole():
    closed = trimesh.creation.icosphere(subdivisions=3)
    holed = Mesh(torch.tensor(closed.vertices, dtype=torch.float32), torch.tensor(closed.faces[1:]))
    w = winding_number(holed, torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [2.0, 0.0, 0.0]]))
    assert float(w[0]) > 0.99 and float(w[1]) > 0.99 and abs(float(w[2])) < 0.01


def test_winding_number_rejects_bad_input():
    with pytest.raises(ValueError, match="no faces"):
        winding_number(
            Mesh(torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long)), torch.zeros(1, 3)
        )
    with pytest.raises(ValueError, match=r"\(P, 3\)"):
        winding_number(box(), torch.zeros(4, 2))


# ----------------------------------------------------------------------------------------- iou
def test_volume_iou_of_a_mesh_with_itself_is_one():
    ant = load_mesh("ant.ply").normalized()
    assert volume_iou(ant, ant, resolution=24) == 1.0


def test_volume_iou_of_offset_boxes_is_analytic():
    a, b = box(), box(offset=(0.5, 0.0, 0.0))  # overlap 0.5, union 1.5 -> 1/3
    assert volume_iou(a, b, resolution=24) == pytest.approx(1 / 3, abs=0.01)
    sampled = volume_iou(a, b, num_points=20_000, generator=gen())
    assert sampled == pytest.approx(1 / 3, abs=0.02)
    # Diagonal offset: overlap 0.5^3, union 2 - 0.125.
    c = box(offset=(0.5, 0.5, 0.5))
    assert volume_iou(a, c, resolution=24) == pytest.approx(0.125 / 1.875, abs=0.01)
    far = box(offset=(3.0, 0.0, 0.0))
    assert volume_iou(a, far, resolution=16) == 0.0


def test_volume_iou_of_nested_spheres():
    small, big = sphere(0.5), sphere(1.0)
    expected = 0.5**3  # volume ratio; polyhedra approximate spheres closely at 3 subdivisions
    assert volume_iou(small, big, resolution=32) == pytest.approx(expected, abs=0.01)


def test_mesh_metrics_identity_and_determinism():
    ant = load_mesh("ant.ply").normalized()
    same = mesh_metrics(ant, ant, num_points=2000, resolution=16)
    assert same == {"chamfer": 0.0, "fscore": 1.0, "iou": 1.0}
    moved = Mesh(ant.vertices + torch.tensor([0.05, 0.0, 0.0]), ant.faces)
    first = mesh_metrics(ant, moved, num_points=2000, resolution=16, seed=3)
    assert first == mesh_metrics(ant, moved, num_points=2000, resolution=16, seed=3)
    assert 0.0 < first["chamfer"] < 0.05
    assert 0.0 <= first["fscore"] < 1.0 and 0.0 < first["iou"] < 1.0
