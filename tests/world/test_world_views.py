"""Shaded 4-view renders: colours, coverage, object ownership, hue-keeping shading, determinism."""

from __future__ import annotations

import pytest
import torch

from dreamreward.render.mesh import Mesh
from dreamreward.world.layout import scene_mesh
from dreamreward.world.scene import COLORS, Scene, SceneObject
from dreamreward.world.shapes import primitive_mesh
from dreamreward.world.views import Light, corner_normals, default_cameras, render_views

SIZE = 32


@pytest.fixture(scope="module")
def cams():
    return default_cameras(SIZE)


def test_default_cameras_are_front_side_back_side() -> None:
    cameras = default_cameras(64, elevation_deg=0.0, distance=2.0)
    assert len(cameras) == 4 and cameras.width == cameras.height == 64
    expected = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [-2.0, 0, 0], [0, -2.0, 0]])
    assert torch.allclose(cameras.position, expected, atol=1e-5)


def test_red_sphere_is_red_in_the_centre_and_white_at_the_corners(cams) -> None:
    mesh, _ = scene_mesh(Scene((SceneObject("sphere", "red"),)))
    out = render_views(mesh, cams)
    rgb, mask = out["rgb"], out["mask"]
    assert rgb.shape == (4, SIZE, SIZE, 3) and mask.shape == (4, SIZE, SIZE, 1)
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    centre = rgb[:, SIZE // 2 - 2 : SIZE // 2 + 2, SIZE // 2 - 2 : SIZE // 2 + 2].mean((1, 2))
    assert bool(
        (centre[:, 0] > centre[:, 1] + 0.3).all() and (centre[:, 0] > centre[:, 2] + 0.3).all()
    )
    corners = rgb[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.equal(corners, torch.ones_like(corners))
    assert torch.equal(mask[:, [0, -1]][..., [0, -1], :], torch.zeros(4, 2, 2, 1))
    # The scene (half-diagonal 0.8) fits every view: the border is background.
    border = torch.cat([mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]], 1)
    assert float(border.max()) == 0.0
    # Antialiased coverage has fractional values on the silhouette.
    assert bool(((mask > 0) & (mask < 1)).any())


def test_object_index_follows_left_right_layout(cams) -> None:
    scene = Scene((SceneObject("cube", "red"), SceneObject("sphere", "blue")), "left of")
    mesh, index = scene_mesh(scene)
    out = render_views(mesh, cams, index)
    obj = out["object_index"]
    assert obj.shape == (4, SIZE, SIZE) and obj.dtype == torch.long
    assert set(obj.unique().tolist()) == {-1, 0, 1}
    assert torch.equal(obj >= 0, out["mask"][..., 0] >= 0.5)
    cols = torch.arange(SIZE).expand(SIZE, SIZE)

    def mean_col(view: int, i: int) -> float:
        return float(cols[obj[view] == i].float().mean())

    assert mean_col(0, 0) < mean_col(0, 1)  # front: object 0 (at -Y) on the left
    assert mean_col(2, 0) > mean_col(2, 1)  # back: mirrored
    # Pixels owned by an object show its colour (red vs blue).
    rgb = out["rgb"][0]
    assert float(rgb[obj[0] == 0][:, 0].mean()) > float(rgb[obj[0] == 0][:, 2].mean()) + 0.3
    assert float(rgb[obj[0] == 1][:, 2].mean()) > float(rgb[obj[0] == 1][:, 0].mean()) + 0.3


@pytest.mark.parametrize("color", ["red", "yellow", "purple", "brown"])
def test_shading_keeps_hue_and_stays_bright_enough(cams, color: str) -> None:
    mesh, _ = scene_mesh(Scene((SceneObject("cube", color),)))
    light = Light()
    out = render_views(mesh, cams, light=light)
    full = out["mask"][..., 0] == 1.0
    pixels = out["rgb"][full]  # (P, 3) fully covered: colour * shade
    base = torch.tensor(COLORS[color])
    shade = pixels / base
    assert torch.allclose(shade, shade[:, :1].expand_as(shade), atol=1e-4)  # same hue
    assert float(shade.min()) >= light.ambient - 1e-4
    assert float(shade.max()) <= light.ambient + light.diffuse + 1e-4
    assert float(shade.max() - shade.min()) > 0.1  # the shading is visible


def test_render_is_deterministic(cams) -> None:
    scene = Scene((SceneObject("torus", "orange"), SceneObject("cone", "green")), "on top of")
    mesh, index = scene_mesh(scene)
    a, b = render_views(mesh, cams, index), render_views(mesh, cams, index)
    for key in ("rgb", "mask", "object_index"):
        assert torch.equal(a[key], b[key])


def test_crease_normals_flat_on_cube_smooth_on_sphere() -> None:
    cube = primitive_mesh("cube")
    normals = corner_normals(cube.vertices, cube.faces)
    tri = cube.vertices[cube.faces]
    face_n = torch.nn.functional.normalize(
        torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1), dim=-1
    )
    assert torch.allclose(normals, face_n[:, None].expand_as(normals), atol=1e-5)
    sphere = primitive_mesh("sphere")
    normals = corner_normals(sphere.vertices, sphere.faces)
    radial = torch.nn.functional.normalize(sphere.vertices[sphere.faces], dim=-1)
    assert float((normals * radial).sum(-1).min()) > 0.99


def test_back_faces_are_shaded_like_front_faces(cams) -> None:
    # One triangle in the YZ plane seen from the front camera, in both windings (an open mesh).
    verts = torch.tensor([[0.0, -0.5, -0.4], [0.0, 0.5, -0.4], [0.0, 0.0, 0.5]])
    colors = torch.tensor(COLORS["blue"]).expand(3, 3)
    front = Mesh(verts, torch.tensor([[0, 1, 2]]), colors)
    back = Mesh(verts, torch.tensor([[0, 2, 1]]), colors)
    a, b = render_views(front, cams[:1]), render_views(back, cams[:1])
    assert torch.allclose(a["rgb"], b["rgb"], atol=1e-6)
    assert float(a["mask"].max()) == 1.0


def test_empty_mesh_renders_background(cams) -> None:
    empty = Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    out = render_views(empty, cams, torch.zeros(0, dtype=torch.long))
    assert torch.equal(out["rgb"], torch.ones(4, SIZE, SIZE, 3))
    assert float(out["mask"].max()) == 0.0 and int(out["object_index"].max()) == -1
