"""Primitive meshes (closed, outward, in the unit box) and scene layout (relations, scale)."""

from __future__ import annotations

import random

import pytest
import torch
import trimesh

from dreamreward.world.layout import (
    GAP,
    merge_meshes,
    object_meshes,
    scene_mesh,
)
from dreamreward.world.scene import COLORS, SHAPES, Scene, SceneObject
from dreamreward.world.shapes import TORUS_RING_RADIUS, TORUS_TUBE_RADIUS, primitive_mesh


def two(rel: str, a: str = "cube", b: str = "sphere", sa: str = "medium", sb: str = "medium"):
    return Scene((SceneObject(a, "red", sa), SceneObject(b, "blue", sb)), rel)


def bbox(vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return vertices.min(0).values, vertices.max(0).values


@pytest.mark.parametrize("shape", SHAPES)
def test_primitive_is_closed_outward_and_in_unit_box(shape: str) -> None:
    mesh = primitive_mesh(shape)
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # outward (counter-clockwise from outside) winding
    assert 50 <= mesh.num_faces <= 1000
    lo, hi = bbox(mesh.vertices)
    assert torch.allclose(lo + hi, torch.zeros(3), atol=1e-6)  # centred
    assert torch.allclose(hi[:2], torch.tensor([0.5, 0.5]), atol=1e-6)  # fills X and Y
    assert float(hi[2]) <= 0.5 + 1e-6
    # Every face normal points away from the solid's core (the axis, or the torus' tube centre).
    tri = mesh.vertices[mesh.faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    centroid = tri.mean(1)
    core = torch.zeros_like(centroid)
    if shape == "torus":
        radial = torch.nn.functional.normalize(centroid[:, :2], dim=-1)
        core[:, :2] = radial * TORUS_RING_RADIUS
    elif shape in ("cone", "cylinder"):
        core[:, 2] = centroid[:, 2].clamp(-0.49, 0.49) * (shape == "cylinder")
    assert bool(((normal * (centroid - core)).sum(-1) > 0).all())


def test_primitive_shapes_orientation_and_cache() -> None:
    cone = primitive_mesh("cone")
    apex = cone.vertices[cone.vertices[:, 2].argmax()]
    assert torch.allclose(apex, torch.tensor([0.0, 0.0, 0.5]))  # apex up (+Z)
    torus = primitive_mesh("torus")
    assert float(torus.vertices[:, 2].max()) == pytest.approx(TORUS_TUBE_RADIUS, abs=1e-6)
    # Cached per (shape, detail) but every call returns tensors the caller may modify.
    cone.vertices.mul_(10)
    assert float(primitive_mesh("cone").vertices.abs().max()) == pytest.approx(0.5)
    assert primitive_mesh("sphere", 12).num_faces < primitive_mesh("sphere", 24).num_faces
    with pytest.raises(ValueError, match="unknown shape 'pyramid'"):
        primitive_mesh("pyramid")
    with pytest.raises(ValueError, match="detail"):
        primitive_mesh("sphere", 3)


@pytest.mark.parametrize(
    "scene",
    [
        Scene((SceneObject("torus", "green", "small"),)),
        two("on top of", "cone", "cylinder", "large", "small"),
        two("left of", "torus", "cube", "small", "large"),
        two("behind"),
    ],
)
def test_scene_is_centred_with_half_diagonal_radius_and_coloured(scene: Scene) -> None:
    mesh, index = scene_mesh(scene, radius=0.8)
    lo, hi = bbox(mesh.vertices)
    assert float((hi - lo).norm() / 2) == pytest.approx(0.8, abs=1e-5)
    assert torch.allclose((lo + hi) / 2, torch.zeros(3), atol=1e-6)
    assert index.dtype == torch.long and index.shape == (mesh.num_vertices,)
    assert set(index.tolist()) == set(range(scene.num_objects))
    for i, obj in enumerate(scene.objects):
        expected = torch.tensor(COLORS[obj.color])
        assert torch.equal(
            mesh.vertex_colors[index == i], expected.expand(int((index == i).sum()), 3)
        )
    # Faces never mix objects.
    assert bool((index[mesh.faces] == index[mesh.faces[:, :1]]).all())


def test_relations_place_object_zero() -> None:
    def boxes(scene: Scene):
        mesh, index = scene_mesh(scene, radius=None)
        return [bbox(mesh.vertices[index == i]) for i in range(2)], mesh, index

    (lo0, hi0), (lo1, hi1) = boxes(two("on top of"))[0]
    assert float(lo0[2]) == pytest.approx(float(hi1[2]), abs=1e-5)  # touching, above
    _, mesh, index = boxes(two("on top of"))
    assert mesh.vertices[index == 0, 2].mean() > mesh.vertices[index == 1, 2].mean()

    for rel, axis, sign in [
        ("left of", 1, -1),
        ("next to", 1, -1),  # documented: same side as "left of"
        ("right of", 1, 1),
        ("in front of", 0, 1),
        ("behind", 0, -1),
    ]:
        (lo0, hi0), (lo1, hi1) = boxes(two(rel, sa="small", sb="large"))[0]
        gap = float(lo1[axis] - hi0[axis]) if sign < 0 else float(lo0[axis] - hi1[axis])
        assert gap == pytest.approx(GAP, abs=1e-5), rel
        assert float(lo0[2]) == pytest.approx(float(lo1[2]), abs=1e-5), rel  # same ground
    # Sizes scale objects relative to each other.
    (lo0, hi0), (lo1, hi1) = boxes(two("left of", sa="small", sb="large"))[0]
    assert float((hi1 - lo1)[0] / (hi0 - lo0)[0]) == pytest.approx(1.3 / 0.7, rel=1e-4)


def test_jitter_is_seeded_small_and_keeps_relations() -> None:
    scene = two("left of")
    a, _ = scene_mesh(scene, jitter=random.Random(3))
    b, _ = scene_mesh(scene, jitter=random.Random(3))
    c, _ = scene_mesh(scene)
    assert torch.equal(a.vertices, b.vertices)
    assert not torch.equal(a.vertices, c.vertices)
    for seed in range(5):
        objs = object_meshes(two("on top of"), jitter=random.Random(seed), radius=None)
        assert float(objs[0].vertices[:, 2].min()) == pytest.approx(
            float(objs[1].vertices[:, 2].max()), abs=1e-5
        )
        objs = object_meshes(two("right of"), jitter=random.Random(seed), radius=None)
        assert float(objs[0].vertices[:, 1].min() - objs[1].vertices[:, 1].max()) >= GAP - 1e-5


def test_object_meshes_merge_to_scene_mesh() -> None:
    scene = two("in front of", "cylinder", "torus")
    parts = object_meshes(scene)
    merged, index = merge_meshes(parts)
    mesh, expected_index = scene_mesh(scene)
    assert torch.equal(merged.vertices, mesh.vertices) and torch.equal(merged.faces, mesh.faces)
    assert torch.equal(index, expected_index)
    # Dropping an object keeps the other in place and its id when asked.
    alone, ids = merge_meshes(parts[1:], object_ids=[1])
    assert torch.equal(alone.vertices, parts[1].vertices) and set(ids.tolist()) == {1}
