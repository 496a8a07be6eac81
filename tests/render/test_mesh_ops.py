"""Mesh normals, adjacency and regularisers."""

from __future__ import annotations

import math

import pytest
import torch

from dreamreward.render.mesh_ops import (
    edge_adjacent_faces,
    face_normals,
    laplacian_smoothing_loss,
    normal_consistency_loss,
    uniform_laplacian,
    vertex_normals,
)


def unit_cube() -> tuple[torch.Tensor, torch.Tensor]:
    """Cube [-0.5, 0.5]^3 with 12 outward counter-clockwise triangles."""
    v = torch.tensor(
        [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)],
        dtype=torch.float64,
    )
    quads = [  # each seen from outside counter-clockwise; vertex index = 4x + 2y + z
        (0, 1, 3, 2),  # x = -0.5
        (4, 6, 7, 5),  # x = +0.5
        (0, 4, 5, 1),  # y = -0.5
        (2, 3, 7, 6),  # y = +0.5
        (0, 2, 6, 4),  # z = -0.5
        (1, 5, 7, 3),  # z = +0.5
    ]
    faces = [[a, b, c] for a, b, c, _ in quads] + [[a, c, d] for a, _, c, d in quads]
    return v, torch.tensor(faces)


def icosahedron() -> tuple[torch.Tensor, torch.Tensor]:
    t = (1 + math.sqrt(5)) / 2
    v = torch.tensor(
        [
            [-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0],
            [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
            [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1],
        ],
        dtype=torch.float64,
    )  # fmt: skip
    f = torch.tensor(
        [
            [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
            [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
            [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
            [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
        ]
    )  # fmt: skip
    return v / v.norm(dim=-1, keepdim=True), f


def grid_plane(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    v = torch.stack([gx, gy, torch.zeros_like(gx)], -1).reshape(-1, 3)
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    f = torch.cat([torch.stack([a, b, d], -1), torch.stack([a, d, c], -1)]).reshape(-1, 3)
    return v, f


@pytest.mark.parametrize("mesh", [unit_cube, icosahedron])
def test_normals_point_outward(mesh):
    v, f = mesh()
    fn = face_normals(v[f][None], unit=True)[0]
    centroids = v[f].mean(1)
    assert ((fn * centroids).sum(-1) > 0).all()
    assert torch.allclose(fn.norm(dim=-1), torch.ones(len(f), dtype=v.dtype))
    vn = vertex_normals(v, f)
    assert ((vn * v).sum(-1) > 0).all()
    assert torch.allclose(vn.norm(dim=-1), torch.ones(len(v), dtype=v.dtype))
    batched = vertex_normals(torch.stack([v, 2 * v]), f)
    assert torch.allclose(batched[0], vn) and torch.allclose(batched[1], vn)


def test_face_normal_length_is_twice_area_and_shapes_checked():
    tri = torch.tensor([[[[0.0, 0, 0], [2, 0, 0], [0, 3, 0]]]])
    assert torch.allclose(face_normals(tri), torch.tensor([[[0.0, 0, 6]]]))
    with pytest.raises(ValueError, match="face_vertices"):
        face_normals(tri[0])
    with pytest.raises(ValueError, match="faces"):
        vertex_normals(torch.zeros(3, 3), torch.tensor([0, 1, 2]))


def test_vertex_normals_are_area_weighted():
    # Vertex 0 shared by a big face (normal +z) and a small one (normal +x).
    v = torch.tensor(
        [[0.0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, -0.1], [0, 0.1, 0]], dtype=torch.float64
    )
    f = torch.tensor([[0, 1, 2], [0, 3, 4]])
    n0 = vertex_normals(v, f)[0]
    assert n0[2] > 0.99 and 0 < n0[0] < 0.01


def test_edge_adjacency():
    v, f = unit_cube()
    pairs = edge_adjacent_faces(f)
    assert pairs.shape == (18, 2) and (pairs[:, 0] < pairs[:, 1]).all()
    for a, b in pairs.tolist():
        assert len(set(f[a].tolist()) & set(f[b].tolist())) >= 2
    assert edge_adjacent_faces(torch.tensor([[0, 1, 2]])).shape == (0, 2)
    # Three faces on one edge: non-manifold, skipped.
    fan = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    assert edge_adjacent_faces(fan).shape == (0, 2)


def test_normal_consistency():
    v, f = grid_plane()
    assert normal_consistency_loss(v, f).abs() < 1e-12
    folded = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], requires_grad=True)
    pair = torch.tensor([[0, 1, 2], [0, 3, 1]])  # shares edge (0, 1), at a right angle
    loss = normal_consistency_loss(folded, pair)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert folded.grad.abs().sum() > 0
    cube_v, cube_f = unit_cube()
    cube_loss = normal_consistency_loss(cube_v, cube_f)  # 6 flat diagonals, 12 right angles
    assert cube_loss.item() == pytest.approx(12 / 18)
    batched = normal_consistency_loss(torch.stack([cube_v, cube_v]), cube_f)
    assert batched.item() == pytest.approx(cube_loss.item())


def test_uniform_laplacian_sparse_and_matches_dense():
    v, f = icosahedron()
    num_v = len(v)
    lap = uniform_laplacian(num_v, f, dtype=torch.float64)
    assert lap.is_sparse and lap.shape == (num_v, num_v)
    dense = torch.zeros(num_v, num_v, dtype=torch.float64)
    neighbours = [set() for _ in range(num_v)]
    for a, b, c in f.tolist():
        for i, j in ((a, b), (b, c), (c, a)):
            neighbours[i].add(j)
            neighbours[j].add(i)
    for i, nbrs in enumerate(neighbours):
        dense[i, i] = -1
        for j in nbrs:
            dense[i, j] = 1 / len(nbrs)
    assert torch.allclose(lap.to_dense(), dense)
    assert torch.allclose(lap.to_dense().sum(1), torch.zeros(num_v, dtype=torch.float64))
    # Kaolin's docstring example; an unused vertex gets an all-zero row.
    small = uniform_laplacian(4, torch.tensor([[0, 1, 2]])).to_dense()
    expected = torch.tensor([[-1, 0.5, 0.5, 0], [0.5, -1, 0.5, 0], [0.5, 0.5, -1, 0], [0, 0, 0, 0]])
    assert torch.allclose(small, expected)
    with pytest.raises(ValueError, match="num_vertices"):
        uniform_laplacian(2, torch.tensor([[0, 1, 2]]))


def test_laplacian_smoothing_loss():
    v, f = icosahedron()
    clean = laplacian_smoothing_loss(v, f)
    noisy_v = v + 0.05 * torch.randn(
        v.shape, generator=torch.Generator().manual_seed(0), dtype=v.dtype
    )
    noisy = laplacian_smoothing_loss(noisy_v, f)
    assert noisy > clean > 0
    shifted = laplacian_smoothing_loss(v + torch.tensor([1.0, -2.0, 3.0], dtype=v.dtype), f)
    assert torch.allclose(shifted, clean)
    batched = laplacian_smoothing_loss(torch.stack([v, noisy_v]), f)
    assert torch.allclose(batched, (clean + noisy) / 2)
    # Plain gradient descent smooths the mesh.
    x = noisy_v.clone().requires_grad_()
    for _ in range(20):
        loss = laplacian_smoothing_loss(x, f)
        (grad,) = torch.autograd.grad(loss, x)
        x = (x - 0.5 * grad).detach().requires_grad_()
    assert laplacian_smoothing_loss(x, f) < 0.5 * noisy
