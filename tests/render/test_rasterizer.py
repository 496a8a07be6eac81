"""Analytic checks of the pure-PyTorch rasterizer, soft silhouette, renderer and Kaolin adapter."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

import dreamreward.render.coverage as coverage_module
import dreamreward.render.rasterizer as rasterizer_module
from dreamreward.render.cameras import orbit_cameras
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_render import render_mesh
from dreamreward.render.rasterizer import rasterize
from dreamreward.render.rays import pixel_centers_ndc
from dreamreward.render.soft_silhouette import soft_silhouette


def disk_fan(n: int = 96, radius: float = 0.6, z: float = -2.0, reverse: bool = False):
    """A fan of n triangles approximating a disk in NDC; returns (B=1) z, image, exact area."""
    ang = torch.arange(n + 1, dtype=torch.float64) / n * 2 * math.pi
    rim = torch.stack([radius * torch.cos(ang), radius * torch.sin(ang)], -1)
    centre = torch.zeros(n, 2, dtype=torch.float64)
    tri = torch.stack([centre, rim[:-1], rim[1:]], 1)
    if reverse:
        tri = tri.flip(1)
    area = 0.5 * n * math.sin(2 * math.pi / n) * radius**2
    return torch.full((1, n, 3), z).float(), tri[None].float(), area


def one_triangle(xy, z=(-2.0, -2.0, -2.0), dtype=torch.float32):
    image = torch.tensor(xy, dtype=dtype).view(1, 1, 3, 2)
    return torch.tensor(z, dtype=dtype).view(1, 1, 3), image


def uv_sphere(n: int = 16, radius: float = 1.0) -> Mesh:
    """Closed UV sphere with outward counter-clockwise faces."""
    theta = torch.linspace(0, math.pi, n + 1)[1:-1]
    phi = torch.arange(n) / n * 2 * math.pi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    verts = torch.cat([ring, torch.tensor([[0.0, 0, 1], [0.0, 0, -1]])]) * radius
    idx = torch.arange((n - 1) * n).reshape(n - 1, n)
    a, b, c, d = idx[:-1], idx[:-1].roll(-1, 1), idx[1:], idx[1:].roll(-1, 1)
    top, bottom = len(verts) - 2, len(verts) - 1
    faces = torch.cat(
        [
            torch.stack([a, c, b], -1).reshape(-1, 3),
            torch.stack([b, c, d], -1).reshape(-1, 3),
            torch.stack([torch.full((n,), top), idx[0], idx[0].roll(-1)], -1),
            torch.stack([torch.full((n,), bottom), idx[-1].roll(-1), idx[-1]], -1),
        ]
    )
    return Mesh(verts, faces)


# --------------------------------------------------------------------------- hard rasterizer
@pytest.mark.parametrize("reverse", [False, True])
def test_disk_coverage_matches_area(reverse):
    z, image, area = disk_fan(reverse=reverse)
    feats = torch.ones(1, image.shape[1], 3, 1)
    out, face_idx = rasterize(128, 128, z, image, feats)
    assert face_idx.shape == (1, 128, 128) and face_idx.dtype == torch.long
    covered = (face_idx >= 0).sum().item()
    expected = area / 4 * 128 * 128  # NDC spans an area of 4
    perimeter_px = 2 * math.pi * 0.6 * 64
    assert abs(covered - expected) < 0.05 * perimeter_px
    assert torch.equal(out[..., 0] > 0, face_idx >= 0)  # feature 1 exactly where covered


def test_depth_test_picks_nearer_face_in_any_order():
    tri = [[-0.8, -0.8], [0.8, -0.8], [0.0, 0.8]]
    image = torch.tensor([tri, tri], dtype=torch.float32)[None]
    for near_first in (True, False):
        zs = [-1.0, -3.0] if near_first else [-3.0, -1.0]
        z = torch.tensor(zs).view(1, 2, 1).expand(1, 2, 3).contiguous()
        colour = torch.tensor([1.0, 2.0] if near_first else [2.0, 1.0]).view(1, 2, 1, 1)
        out, face_idx = rasterize(16, 16, z, image, colour.expand(1, 2, 3, 1))
        near = 0 if near_first else 1
        covered = face_idx >= 0
        assert covered.any()
        assert (face_idx[covered] == near).all()
        assert torch.allclose(out[covered], torch.ones(1))


def test_depth_test_with_intersecting_triangles():
    # Two triangles crossing in depth along x = 0: left half goes to one, right to the other.
    tri = [[-0.9, -0.9], [0.9, -0.9], [0.0, 0.9]]
    image = torch.tensor([tri, tri], dtype=torch.float32)[None]
    z = torch.tensor([[[-1.0, -3.0, -2.0], [-3.0, -1.0, -2.0]]])
    _, face_idx = rasterize(32, 32, z, image, torch.zeros(1, 2, 3, 1))
    x, _ = pixel_centers_ndc(32, 32)
    covered = face_idx[0] >= 0
    assert (face_idx[0][covered & (x < -0.05)] == 0).all()
    assert (face_idx[0][covered & (x > 0.05)] == 1).all()


def test_affine_attribute_is_reproduced_exactly():
    z, image = one_triangle([[-0.9, -0.7], [0.8, -0.9], [0.1, 0.95]])
    feats = image.clone()  # each corner carries its own NDC position
    out, face_idx = rasterize(24, 32, z, image, [feats, feats[..., :1]])
    assert isinstance(out, list) and len(out) == 2
    x, y = pixel_centers_ndc(32, 24)
    covered = face_idx[0] >= 0
    assert covered.sum() > 100
    assert torch.allclose(out[0][0][covered], torch.stack([x, y], -1)[covered], atol=1e-5)
    assert torch.equal(out[1][0], out[0][0][..., :1])
    assert (out[0][0][~covered] == 0).all()


def test_interpolation_is_perspective_correct():
    # A plane tilted in camera space, seen through a pinhole with NDC = (X, Y) / -Z.
    corners = torch.tensor(
        [[-1.5, -1.0, -2.0], [1.5, -1.0, -6.0], [1.5, 1.0, -6.0], [-1.5, 1.0, -2.0]],
        dtype=torch.float64,
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    cam = corners[faces][None]  # (1, 2, 3, 3)
    image = cam[..., :2] / -cam[..., 2:]
    z = cam[..., 2]
    out, face_idx = rasterize(48, 48, z, image, cam[..., 2:])
    covered = face_idx[0] >= 0
    assert covered.sum() > 300
    # Ray through each pixel centre: t * (x, y, -1); plane n . p = c through the corners.
    normal = torch.linalg.cross(corners[1] - corners[0], corners[3] - corners[0])
    offset = normal @ corners[0]
    x, y = pixel_centers_ndc(48, 48, dtype=torch.float64)
    ray = torch.stack([x, y, -torch.ones_like(x)], -1)
    true_z = -offset / (ray @ normal)
    assert torch.allclose(out[0, ..., 0][covered], true_z[covered], rtol=1e-6)
    # The check has teeth: screen-space (non-perspective) interpolation is far off.
    flat, _ = rasterize(48, 48, torch.full_like(z, -1.0), image, cam[..., 2:])
    assert (flat[0, ..., 0][covered] - true_z[covered]).abs().max() > 0.2


def random_soup(num_faces: int, seed: int, dtype=torch.float64):
    """Random overlapping triangles (both windings, some partly off-image) at random depths."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand(1, num_faces, 1, 2, generator=gen, dtype=dtype) * 2.4 - 1.2
    image = centre + (torch.rand(1, num_faces, 3, 2, generator=gen, dtype=dtype) - 0.5) * 0.9
    z = -1.0 - 4.0 * torch.rand(1, num_faces, 3, generator=gen, dtype=dtype)
    return z, image


def brute_force_bary(image, height, width):
    """(F, H, W, 3) screen barycentrics of every pixel centre for every face (float64)."""
    x, y = pixel_centers_ndc(width, height, dtype=torch.float64)
    p = torch.stack([x, y], -1)[None]  # (1, H, W, 2)
    a, b, c = (image[0, :, i, None, None, :] for i in range(3))  # (F, 1, 1, 2)

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    area = cross(b - a, c - a)
    return (
        torch.stack([cross(b - p, c - p), cross(c - p, a - p), cross(a - p, b - p)], -1)
        / area[..., None]
    )


def test_matches_brute_force_z_buffer():
    z, image = random_soup(40, seed=3)
    _, face_idx = rasterize(20, 24, z, image, torch.zeros(1, 40, 3, 1, dtype=torch.float64))
    bary = brute_force_bary(image, 20, 24)
    inside = (bary >= 0).all(-1)
    inv_depth = (bary * (-1.0 / z[0, :, None, None, :])).sum(-1)
    inv_depth = torch.where(inside, inv_depth, -math.inf)
    best, arg = inv_depth.max(0)
    expected = torch.where(torch.isfinite(best), arg, -1)
    assert (expected >= 0).sum() > 100 and (expected == -1).sum() > 20
    assert torch.equal(face_idx[0], expected)


@pytest.mark.parametrize("aggregate", ["max", "prod"])
def test_soft_silhouette_matches_brute_force(aggregate):
    _, image = random_soup(12, seed=5)
    sigma, threshold = 2.0, 1e-3
    soft = soft_silhouette(image, 20, 24, sigma=sigma, aggregate=aggregate, threshold=threshold)
    bary = brute_force_bary(image, 20, 24)
    covered = (bary >= 0).all(-1).any(0)
    x, y = pixel_centers_ndc(24, 20, dtype=torch.float64)
    q = torch.stack([(x + 1) * 12, (1 - y) * 10], -1)  # pixel units
    corners = torch.stack([(image[0, ..., 0] + 1) * 12, (1 - image[0, ..., 1]) * 10], -1)
    d2 = []
    for i in range(3):
        a, b = corners[:, i, None, None], corners[:, (i + 1) % 3, None, None]
        t = (((q - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1)).clamp(0, 1)
        d2.append((q - a - t[..., None] * (b - a)).pow(2).sum(-1))
    d2 = torch.stack(d2).amin(0)  # (F, H, W)
    radius2 = sigma * math.log(1 / threshold)
    d_f = ((torch.exp(-d2 / sigma) - threshold) / (1 - threshold)) * (d2 < radius2)
    expected = d_f.amax(0) if aggregate == "max" else 1 - (1 - d_f).prod(0)
    expected = torch.where(covered, 1.0, expected)
    assert (expected[~covered] > 0.05).sum() > 10
    assert torch.allclose(soft[0], expected, atol=1e-9)


def test_faces_behind_camera_degenerate_and_invalid_are_skipped():
    tri = [[-0.8, -0.8], [0.8, -0.8], [0.0, 0.8]]
    z = torch.tensor([[[-1.0, -1.0, -1.0], [-2.0, 0.5, -2.0], [-2.0, -2.0, -2.0]]])
    degenerate = [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]
    image = torch.tensor([[tri, tri, degenerate]], dtype=torch.float32)
    valid = torch.tensor([[False, True, True]])
    out, face_idx = rasterize(16, 16, z, image, torch.ones(1, 3, 3, 2), valid_faces=valid)
    assert (face_idx == -1).all()
    assert torch.isfinite(out).all() and (out == 0).all()


def test_huge_face_is_clipped_and_interpolates():
    z, image = one_triangle([[-100.0, -100.0], [300.0, -100.0], [-100.0, 300.0]])
    feats = torch.tensor([[[[1.0], [1.0], [1.0]]]])
    out, face_idx = rasterize(20, 30, z, image, feats)
    assert (face_idx == 0).all()
    assert torch.allclose(out, torch.ones_like(out))


def test_many_faces_and_chunking_agree(monkeypatch):
    mesh = uv_sphere(12, 0.8)
    cams = orbit_cameras(20.0, torch.tensor([0.0, 90.0]), 3.0, 40.0, 40)
    cam_pts = cams.world_to_camera(mesh.vertices)
    z = cam_pts[..., 2][:, mesh.faces]
    image = cams.project(cam_pts)[:, mesh.faces]
    feats = cam_pts[:, mesh.faces]
    ref_out, ref_idx = rasterize(40, 40, z, image, feats)
    monkeypatch.setattr(coverage_module, "_MAX_CANDIDATES", 7)
    monkeypatch.setattr(rasterizer_module, "_INTERP_CHUNK", 13)
    monkeypatch.setattr(coverage_module, "_SMALL_PROBLEM", 0)  # rectangular tiles too
    out, idx = rasterize(40, 40, z, image, feats)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(out, ref_out, atol=1e-6)
    # Depth of a sphere of radius 0.8 seen from distance 3.
    depth = -out[..., 2][idx >= 0]
    assert depth.min() > 2.19 and depth.max() < 3.0


def test_rasterize_gradcheck():
    z, image = one_triangle(
        [[-0.83, -0.71], [0.77, -0.52], [-0.12, 0.81]], z=(-1.5, -2.5, -3.1), dtype=torch.float64
    )
    z2, image2 = one_triangle(
        [[0.31, 0.42], [0.93, 0.37], [0.58, 0.96]], z=(-1.1, -1.2, -1.4), dtype=torch.float64
    )
    z = torch.cat([z, z2], 1).requires_grad_()
    image = torch.cat([image, image2], 1).requires_grad_()
    feats = torch.rand(1, 2, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    feats.requires_grad_()

    def fn(z, image, feats):
        return rasterize(8, 8, z, image, feats)[0]

    assert torch.autograd.gradcheck(fn, (z, image, feats), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- soft silhouette
def test_soft_silhouette_is_one_inside_and_decays_outside():
    z, image, _ = disk_fan(48, 0.5)
    soft = soft_silhouette(image, 64, 64, sigma=1.0)
    _, face_idx = rasterize(64, 64, z, image, torch.zeros(1, 48, 3, 1))
    inside = face_idx >= 0
    assert torch.equal(soft[inside], torch.ones(int(inside.sum())))
    assert ((soft >= 0) & (soft <= 1)).all()
    x, y = pixel_centers_ndc(64, 64)
    dist_px = ((x**2 + y**2).sqrt() - 0.5) * 32  # distance outside the disk, in pixels
    far = dist_px[None] > 2.2  # beyond r = sqrt(ln 100) = 2.15 px
    assert (soft[far] == 0).all()
    ring = (dist_px[None] > 0.9) & (dist_px[None] < 1.1)
    assert torch.allclose(soft[ring], torch.full_like(soft[ring], math.exp(-1.0)), atol=0.1)


@pytest.mark.parametrize("aggregate", ["max", "prod"])
def test_soft_silhouette_gradcheck(aggregate):
    image = torch.tensor(
        [
            [
                [[-0.63, -0.41], [0.17, -0.52], [-0.22, 0.31]],
                [[0.41, 0.38], [0.83, 0.47], [0.52, 0.79]],
            ]
        ],
        dtype=torch.float64,
        requires_grad=True,
    )

    def fn(image):
        return soft_silhouette(image, 10, 10, sigma=1.5, aggregate=aggregate)

    assert torch.autograd.gradcheck(fn, (image,), eps=1e-6, atol=1e-6)


def test_soft_silhouette_moves_triangle_to_target():
    target_tri = torch.tensor([[[[-0.5, -0.5], [0.6, -0.4], [0.0, 0.6]]]])
    _, target_idx = rasterize(
        32, 32, torch.full((1, 1, 3), -1.0), target_tri, torch.ones(1, 1, 3, 1)
    )
    target = (target_idx >= 0).float()
    start = target_tri + torch.tensor([0.25, -0.2])
    verts = start.clone().requires_grad_()
    opt = torch.optim.Adam([verts], lr=0.02)
    losses = []
    for _ in range(40):
        loss = (soft_silhouette(verts, 32, 32, sigma=2.0) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert (verts.detach() - target_tri).norm() < 0.5 * (start - target_tri).norm()


# --------------------------------------------------------------------------- renderer
def test_render_mesh_outputs():
    mesh = uv_sphere(16, 0.5)
    cams = orbit_cameras(0.0, torch.tensor([0.0, 90.0]), 2.5, 40.0, 32)
    out = render_mesh(mesh, cams, soft_sigma=1.0)
    n, h, w = 2, 32, 32
    assert out["features"].shape == (n, h, w, 3) and out["face_idx"].shape == (n, h, w)
    for key in ("mask", "alpha", "depth"):
        assert out[key].shape == (n, h, w, 1)
    mask = out["mask"][..., 0] > 0
    assert torch.equal(mask, out["face_idx"] >= 0)
    assert torch.allclose(out["features"][mask], torch.ones(1))  # default white
    assert (out["alpha"] >= out["mask"]).all() and (out["alpha"] <= 1).all()
    depth = out["depth"][..., 0]
    assert (depth[~mask] == 0).all() and depth[mask].min() > 1.9 and depth[mask].max() < 2.5
    # Centre pixels look at the sphere's point facing the camera: normal = camera direction.
    centre_normal = out["normal"][:, 15:17, 15:17].mean((1, 2))
    to_camera = torch.nn.functional.normalize(cams.position, dim=-1)
    assert torch.allclose(centre_normal, to_camera, atol=0.05)
    assert torch.allclose(out["normal"][mask].norm(dim=-1), torch.ones(1), atol=1e-5)


def test_render_mesh_vertex_features_and_gradients():
    mesh = uv_sphere(8, 0.5)
    mesh.vertices.requires_grad_()
    colours = torch.rand(mesh.num_vertices, 2, generator=torch.Generator().manual_seed(1))
    colours.requires_grad_()
    cams = orbit_cameras(10.0, torch.tensor([30.0]), 2.5, 40.0, 16)
    out = render_mesh(mesh, cams, vertex_features=colours, soft_sigma=1.0)
    assert out["features"].shape == (1, 16, 16, 2)
    (out["features"].sum() + out["alpha"].sum() + out["depth"].sum()).backward()
    assert colours.grad.abs().sum() > 0 and mesh.vertices.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="vertex_features"):
        render_mesh(mesh, cams, vertex_features=torch.ones(3, 3))


# --------------------------------------------------------------------------- validation
def test_shape_errors_name_the_argument():
    z, image = one_triangle([[0, 0], [1, 0], [0, 1]])
    feats = torch.ones(1, 1, 3, 1)
    with pytest.raises(ValueError, match="face_vertices_image"):
        rasterize(8, 8, z, image[..., :1], feats)
    with pytest.raises(ValueError, match="face_vertices_z"):
        rasterize(8, 8, z[:, :, :2], image, feats)
    with pytest.raises(ValueError, match=r"face_features\[1\]"):
        rasterize(8, 8, z, image, [feats, torch.ones(2, 1, 3, 1)])
    with pytest.raises(ValueError, match="valid_faces"):
        rasterize(8, 8, z, image, feats, valid_faces=torch.ones(1, 1))
    with pytest.raises(ValueError, match="height and width"):
        rasterize(0, 8, z, image, feats)
    with pytest.raises(ValueError, match="sigma"):
        soft_silhouette(image, 8, 8, sigma=0.0)
    with pytest.raises(ValueError, match="face_vertices_z"):
        soft_silhouette(image, 8, 8, face_vertices_z=torch.ones(1, 2, 3))


# --------------------------------------------------------------------------- Kaolin adapter
def test_kaolin_backend_delegates(monkeypatch):
    calls = []

    def fake_rasterize(*args, **kwargs):
        calls.append((args, kwargs))
        feats = args[4]
        return tuple(torch.zeros(1, 4, 4, f.shape[-1]) for f in feats), torch.zeros(
            1, 4, 4, dtype=torch.long
        )

    fake = types.ModuleType("kaolin")
    fake.render = types.SimpleNamespace(mesh=types.SimpleNamespace(rasterize=fake_rasterize))
    monkeypatch.setitem(sys.modules, "kaolin", fake)
    monkeypatch.setattr(rasterizer_module, "resolve_backend", lambda backend, device: "kaolin")
    z, image = one_triangle([[0, 0], [1, 0], [0, 1]])
    feats = [torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3, 1)]
    valid = torch.ones(1, 1, dtype=torch.bool)
    out, face_idx = rasterize(4, 4, z, image, feats, valid_faces=valid, multiplier=500, eps=1e-7)
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert args[:2] == (4, 4) and args[2] is z and args[3] is image and args[4] is feats
    assert kwargs == {"valid_faces": valid, "multiplier": 500, "eps": 1e-7}
    assert isinstance(out, list) and [o.shape[-1] for o in out] == [2, 1]
    assert face_idx.shape == (1, 4, 4)


def test_kaolin_backend_on_cpu_raises(monkeypatch):
    z, image = one_triangle([[0, 0], [1, 0], [0, 1]])
    feats = torch.ones(1, 1, 3, 1)
    monkeypatch.setitem(sys.modules, "kaolin", None)  # import kaolin -> ImportError
    with pytest.raises(RuntimeError, match="not importable"):
        rasterize(4, 4, z, image, feats, backend="kaolin")
    monkeypatch.setitem(sys.modules, "kaolin", types.ModuleType("kaolin"))
    with pytest.raises(RuntimeError, match="CUDA"):
        rasterize(4, 4, z, image, feats, backend="kaolin")
    out, _ = rasterize(4, 4, z, image, feats, backend="auto")  # CPU: torch backend
    assert out.shape == (1, 4, 4, 1)
