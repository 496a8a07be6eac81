"""Mesh export (GLB/OBJ), image grids and turntables."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from dreamreward.render.export import (
    count_non_manifold_edges,
    export_mesh,
    gltf_to_world,
    images_to_uint8,
    save_image_grid,
    save_turntable,
    world_to_gltf,
)
from dreamreward.render.mesh import Mesh, load_mesh


def tall_box(colors: bool = True) -> Mesh:
    """A box 0.2 x 0.4 x 1.0 (tallest along our up axis Z) lifted to z in [1.5, 2.5]."""
    box = trimesh.creation.box(extents=(0.2, 0.4, 1.0))
    vertices = torch.tensor(box.vertices, dtype=torch.float32) + torch.tensor([0.0, 0.0, 2.0])
    rgb = torch.rand(len(vertices), 3, generator=torch.Generator().manual_seed(0))
    return Mesh(vertices, torch.tensor(box.faces), rgb if colors else None)


def load_back(path) -> trimesh.Trimesh:
    return trimesh.load(path, process=False, force="mesh")


# ------------------------------------------------------------------------------------- meshes
def test_glb_round_trip_rotates_z_up_to_gltf_y_up(tmp_path):
    mesh = tall_box()
    path = export_mesh(mesh, tmp_path / "nested" / "dir" / "box.glb")  # parents created
    loaded = load_back(path)
    assert len(loaded.faces) == mesh.num_faces
    # Our up (+Z, extent 1.0, lifted by 2) is glTF's up (+Y); our front +X is glTF +Z.
    (lo, hi) = loaded.bounds
    np.testing.assert_allclose(hi - lo, [0.4, 1.0, 0.2], atol=1e-6)
    np.testing.assert_allclose((lo + hi) / 2, [0.0, 2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(loaded.vertices, world_to_gltf(mesh.vertices.double().numpy()))
    np.testing.assert_allclose(gltf_to_world(loaded.vertices), mesh.vertices.numpy(), atol=1e-6)
    # A proper rotation: faces keep their outward orientation, so the volume stays positive.
    assert loaded.volume == pytest.approx(0.2 * 0.4 * 1.0, rel=1e-5)
    assert loaded.visual.kind == "vertex"
    colors = loaded.visual.vertex_colors[:, :3] / 255.0
    np.testing.assert_allclose(colors, mesh.vertex_colors.numpy(), atol=0.5 / 255 + 1e-6)


def test_obj_round_trip_keeps_coordinates_and_vertex_colours(tmp_path):
    mesh = tall_box()
    path = export_mesh(mesh, tmp_path / "box.obj")
    vertex_lines = [line.split() for line in path.read_text().splitlines() if line[:2] == "v "]
    assert len(vertex_lines) == mesh.num_vertices
    assert all(len(parts) == 7 for parts in vertex_lines)  # v x y z r g b
    loaded = load_back(path)
    assert len(loaded.faces) == mesh.num_faces
    np.testing.assert_allclose(loaded.vertices, mesh.vertices.numpy(), atol=1e-6)
    colors = loaded.visual.vertex_colors[:, :3] / 255.0
    np.testing.assert_allclose(colors, mesh.vertex_colors.numpy(), atol=0.5 / 255 + 1e-6)
    assert not list(tmp_path.glob("*.mtl"))


def test_export_without_colours(tmp_path):
    mesh = tall_box(colors=False)
    for suffix in (".glb", ".obj"):
        loaded = load_back(export_mesh(mesh, tmp_path / f"plain{suffix}"))
        assert len(loaded.faces) == mesh.num_faces


def test_export_rejects_bad_input(tmp_path):
    good = tall_box()
    with pytest.raises(ValueError, match=r"unsupported mesh format '\.stl'"):
        export_mesh(good, tmp_path / "box.stl")
    empty = Mesh(torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"empty\.glb.*no faces"):
        export_mesh(empty, tmp_path / "empty.glb")
    nan = Mesh(good.vertices.clone(), good.faces)
    nan.vertices[3, 1] = float("nan")
    with pytest.raises(ValueError, match="1 vertices have NaN or infinite"):
        export_mesh(nan, tmp_path / "nan.obj")
    inf = Mesh(good.vertices.clone(), good.faces)
    inf.vertices[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        export_mesh(inf, tmp_path / "inf.glb")
    for bad_index in (len(good.vertices), -1):
        faces = good.faces.clone()
        faces[5, 2] = bad_index
        with pytest.raises(ValueError, match="face indices span|index vertices outside"):
            export_mesh(Mesh(good.vertices, faces), tmp_path / "range.glb")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_non_manifold_mesh_is_written_with_a_warning(tmp_path):
    # Three triangles sharing the edge (0, 1): one non-manifold edge.
    vertices = torch.tensor(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=torch.float32
    )
    faces = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    assert count_non_manifold_edges(faces) == 1
    assert count_non_manifold_edges(tall_box().faces) == 0
    with pytest.warns(UserWarning, match="1 non-manifold edges"):
        path = export_mesh(Mesh(vertices, faces), tmp_path / "fan.glb")
    assert len(load_back(path).faces) == 3


def test_bundled_ant_loads_normalises_and_exports(tmp_path):
    ant = load_mesh("ant.ply").normalized(radius=0.8)
    lo, hi = ant.vertices.min(0).values, ant.vertices.max(0).values
    assert float((hi - lo).norm() / 2) == pytest.approx(0.8, rel=1e-5)
    for suffix in (".glb", ".obj"):
        loaded = load_back(export_mesh(ant, tmp_path / f"ant{suffix}"))
        assert len(loaded.faces) == ant.num_faces == 912
        assert loaded.is_watertight


# ------------------------------------------------------------------------------------- images
def test_images_to_uint8_layouts_and_values():
    chw = torch.tensor([0.0, 0.5, 1.0, 2.0, -1.0, float("nan")]).view(1, 3, 1, 2)
    out = images_to_uint8(chw.requires_grad_())
    assert out.shape == (1, 1, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [[0, 255, 0], [128, 255, 0]])
    hwc = np.full((4, 5, 3), 7, np.uint8)
    assert images_to_uint8(hwc).shape == (1, 4, 5, 3)
    assert images_to_uint8(torch.full((2, 4, 5, 3), 300)).max() == 255
    with pytest.raises(ValueError, match="channels"):
        images_to_uint8(torch.zeros(2, 5, 6, 7))


@pytest.mark.parametrize("channels_first", [False, True])
def test_save_image_grid_size_and_placement(tmp_path, channels_first):
    images = torch.linspace(0, 1, 5).view(5, 1, 1, 1).expand(5, 8, 10, 3)
    if channels_first:
        images = images.permute(0, 3, 1, 2)
    path = save_image_grid(images, tmp_path / "out" / "grid.png", ncols=3, padding=2)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (3 * 10 + 4 * 2, 2 * 8 + 3 * 2)
        grid = np.asarray(img)
    assert tuple(grid[0, 0]) == (255, 255, 255)  # padding
    assert tuple(grid[2, 2]) == (0, 0, 0)  # first image, top-left pixel
    assert grid[2 + 8 + 2, 2 + 10 + 2, 0] == round(255 * 1.0)  # 5th image: row 1, column 1
    assert tuple(grid[-3, -3]) == (255, 255, 255)  # unused 6th cell stays padding


def test_save_image_grid_default_columns_and_suffix(tmp_path):
    path = save_image_grid(torch.rand(4, 6, 6, 3), tmp_path / "g.png", padding=0)
    with Image.open(path) as img:
        assert img.size == (12, 12)
    with pytest.raises(ValueError, match="PNG"):
        save_image_grid(torch.rand(4, 6, 6, 3), tmp_path / "g.jpg")


def test_save_turntable_gif(tmp_path):
    frames = torch.linspace(0, 1, 6).view(6, 1, 1, 1).expand(6, 12, 16, 3)
    path = save_turntable(frames, tmp_path / "spin" / "turn.gif", duration_ms=50)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 6
        assert gif.size == (16, 12)
        assert gif.info["loop"] == 0
        assert gif.info["duration"] == 50


def test_save_turntable_from_pil_images(tmp_path):
    frames = [Image.new("RGB", (9, 7), (20 * i, 0, 0)) for i in range(4)]
    with Image.open(save_turntable(frames, tmp_path / "pil.gif")) as gif:
        assert gif.n_frames == 4 and gif.size == (9, 7)
    tensors = [torch.full((3, 7, 9), i / 4) for i in range(4)]  # channels-first frames
    with Image.open(save_turntable(tensors, tmp_path / "list.gif")) as gif:
        assert gif.n_frames == 4 and gif.size == (9, 7)
    with pytest.raises(ValueError, match="one size"):
        save_turntable([Image.new("RGB", (9, 7)), Image.new("RGB", (8, 7))], tmp_path / "x.gif")


def test_save_turntable_rejects_other_formats(tmp_path, monkeypatch):
    frames = torch.rand(3, 8, 8, 3)
    with pytest.raises(ValueError, match=r"\.gif"):
        save_turntable(frames, tmp_path / "turn.avi")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes the import fail
    with pytest.raises(ImportError, match="GIF is supported"):
        save_turntable(frames, tmp_path / "turn.mp4")


def test_save_turntable_mp4_with_optional_ffmpeg(tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    path = save_turntable(torch.rand(5, 15, 21, 3), tmp_path / "turn.mp4", duration_ms=100)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert meta["size"] == (22, 16)  # padded to even sizes for H.264
    assert sum(1 for _ in reader) == 5


def test_read_image_row_returns_the_tiles_and_names_a_bad_file(tmp_path):
    import torch

    from dreamreward.render.export import read_image_row, save_image_grid

    tiles = torch.rand(4, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    path = save_image_grid(tiles, tmp_path / "views.png", ncols=4)
    read = read_image_row(path, 4)
    assert read.shape == (4, 16, 16, 3)
    assert (read - tiles).abs().max() <= 1 / 255 + 1e-6  # 8-bit PNG
    with pytest.raises(ValueError, match="not one row of 3 square tiles"):
        read_image_row(path, 3)
    with pytest.raises(FileNotFoundError, match="no image grid"):
        read_image_row(tmp_path / "missing.png", 4)
