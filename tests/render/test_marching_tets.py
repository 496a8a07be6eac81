"""Marching tetrahedra on the Kuhn grid: Kaolin parity, watertightness, gradients, backends."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch

import dreamreward.render.marching_tets as mt
from dreamreward.render.marching_tets import marching_tetrahedra
from dreamreward.render.tetgrid import kuhn_tet_grid, tet_volumes

UNIT_TET = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
ONE_TET = torch.tensor([[0, 1, 2, 3]])


def directed_edges(faces: torch.Tensor) -> torch.Tensor:
    """(3F, 2) directed edges (a -> b) of CCW faces (F, 3)."""
    return torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def signed_volume(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return (a * torch.linalg.cross(b, c, dim=-1)).sum() / 6.0


def reference_marching_tets(vertices, tets, sdf):
    """Literal, unoptimised statement of Kaolin's algorithm (2-D unique over all edges of the
    surface tets, then mask the crossing ones) to check our 1-D-key shortcut keeps its order."""
    occ = sdf > 0
    occ4 = occ[tets]
    count = occ4.sum(-1)
    valid = (count > 0) & (count < 4)
    edges = tets[valid][:, torch.tensor(mt._TET_EDGES)].reshape(-1, 2)
    edges = torch.sort(edges, dim=1).values
    unique, inverse = torch.unique(edges, dim=0, return_inverse=True)
    crossing = occ[unique].sum(-1) == 1
    remap = torch.full((unique.shape[0],), -1, dtype=torch.long)
    remap[crossing] = torch.arange(int(crossing.sum()))
    edge_vert = remap[inverse].reshape(-1, 6)
    ends = unique[crossing]
    s = sdf[ends]
    t = s[:, 0] / (s[:, 0] - s[:, 1])  # crossing parameter from the lower-index end
    verts = vertices[ends[:, 0]] + t[:, None] * (vertices[ends[:, 1]] - vertices[ends[:, 0]])
    case = (occ4[valid].long() * torch.tensor([1, 2, 4, 8])).sum(-1)
    table = torch.tensor(mt._TRIANGLE_TABLE)
    ntri = torch.tensor(mt._NUM_TRIANGLES)[case]
    faces = [
        torch.gather(edge_vert[ntri == k], 1, table[case[ntri == k]][:, : 3 * k]).reshape(-1, 3)
        for k in (1, 2)
    ]
    tet_ids = torch.arange(tets.shape[0])[valid]
    tet_idx = torch.cat([tet_ids[ntri == 1], tet_ids[ntri == 2].repeat_interleave(2)])
    return verts, torch.cat(faces), tet_idx


# ---------------------------------------------------------------------- Kaolin parity
def test_kaolin_documented_example():
    sdf = torch.tensor([[-1.0, -1.0, 0.5, 0.5]])
    verts, faces, tet_idx = marching_tetrahedra(UNIT_TET, ONE_TET, sdf, return_tet_idx=True)
    expected = torch.tensor(
        [[0.0, 0.6667, 0.0], [0.0, 0.0, 0.6667], [0.3333, 0.6667, 0.0], [0.3333, 0.0, 0.6667]]
    )
    assert len(verts) == len(faces) == len(tet_idx) == 1
    torch.testing.assert_close(verts[0], expected, atol=1e-4, rtol=0)
    assert faces[0].tolist() == [[3, 0, 1], [3, 2, 0]]
    assert faces[0].dtype == torch.long
    assert tet_idx[0].tolist() == [0, 0]


def test_matches_reference_algorithm_on_random_field():
    gen = torch.Generator().manual_seed(0)
    vertices, tets = kuhn_tet_grid(4, dtype=torch.float64)
    vertices = vertices + 0.05 * torch.rand(vertices.shape, generator=gen, dtype=torch.float64)
    sdf = torch.randn(vertices.shape[0], generator=gen, dtype=torch.float64)
    verts, faces, tet_idx = marching_tetrahedra(vertices[None], tets, sdf[None], True)
    ref_verts, ref_faces, ref_tet_idx = reference_marching_tets(vertices, tets, sdf)
    assert faces[0].shape[0] > 50  # a noisy field cuts many tets: all 14 cases are exercised
    torch.testing.assert_close(verts[0], ref_verts)
    assert torch.equal(faces[0], ref_faces)
    assert torch.equal(tet_idx[0], ref_tet_idx)


def test_every_case_is_one_consistently_oriented_patch():
    # On one positively oriented tet each case's triangles face the larger sdf values.
    for case in range(1, 15):
        occupied = torch.tensor([(case >> i) & 1 for i in range(4)], dtype=torch.bool)
        sdf = torch.where(occupied, 1.0, -1.0)[None]
        verts, faces = marching_tetrahedra(UNIT_TET, ONE_TET, sdf)
        v, f = verts[0], faces[0]
        normals = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)
        towards_occupied = UNIT_TET[0][occupied].mean(0) - UNIT_TET[0][~occupied].mean(0)
        assert bool(((normals @ towards_occupied) > 0).all()), case


# ---------------------------------------------------------------------- sphere
@pytest.mark.parametrize("resolution", [16, 24])
def test_sphere_is_watertight_outward_and_accurate(resolution):
    # r = 0.6 is not at a grid vertex for n = 16 or 24, so no triangle degenerates.
    radius = 0.6
    vertices, tets = kuhn_tet_grid(resolution)
    sdf = vertices.norm(dim=-1) - radius
    verts, faces = marching_tetrahedra(vertices[None], tets, sdf[None])
    v, f = verts[0], faces[0]

    # Watertight and consistently oriented: every directed edge once, and its reverse too.
    edges = directed_edges(f)
    keys = edges[:, 0] * v.shape[0] + edges[:, 1]
    reverse = edges[:, 1] * v.shape[0] + edges[:, 0]
    assert keys.unique().numel() == keys.numel()
    assert bool(torch.isin(reverse, keys).all())
    assert int(torch.unique(f).numel()) == v.shape[0]  # no unused vertex
    # Closed genus-0 surface: Euler characteristic 2.
    assert v.shape[0] - keys.numel() // 2 + f.shape[0] == 2

    # Outward: each face normal points away from the centre; enclosed volume positive.
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    normals = torch.linalg.cross(b - a, c - a, dim=-1)
    assert bool(((normals * (a + b + c)).sum(-1) > 0).all())
    torch.testing.assert_close(v.norm(dim=-1), torch.full((v.shape[0],), radius), atol=0.01, rtol=0)
    sphere_volume = 4.0 / 3.0 * math.pi * radius**3
    assert signed_volume(v, f).item() == pytest.approx(sphere_volume, rel=0.03)


def test_sphere_is_watertight_per_trimesh():
    trimesh = pytest.importorskip("trimesh")
    vertices, tets = kuhn_tet_grid(16)
    verts, faces = marching_tetrahedra(vertices[None], tets, (vertices.norm(dim=-1) - 0.6)[None])
    mesh = trimesh.Trimesh(verts[0].numpy(), faces[0].numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0


def test_batch_elements_are_independent_and_empty_allowed():
    vertices, tets = kuhn_tet_grid(6)
    sphere = vertices.norm(dim=-1) - 0.5
    batch_sdf = torch.stack([sphere, torch.ones_like(sphere), -torch.ones_like(sphere)])
    batch_vertices = vertices[None].expand(3, -1, -1)
    verts, faces, tet_idx = marching_tetrahedra(batch_vertices, tets, batch_sdf, True)
    single_v, single_f = marching_tetrahedra(vertices[None], tets, sphere[None])
    torch.testing.assert_close(verts[0], single_v[0])
    assert torch.equal(faces[0], single_f[0])
    for b in (1, 2):
        assert verts[b].shape == (0, 3) and faces[b].shape == (0, 3)
        assert faces[b].dtype == torch.long and tet_idx[b].shape == (0,)


# ---------------------------------------------------------------------- gradients
def test_gradcheck_wrt_sdf_and_vertices():
    vertices, tets = kuhn_tet_grid(1, dtype=torch.float64)  # 8 vertices, 6 tets
    gen = torch.Generator().manual_seed(1)
    vertices = vertices + 0.1 * torch.rand(vertices.shape, generator=gen, dtype=torch.float64)
    # Values well away from 0 so finite differences never change the topology.
    sdf = torch.tensor([-0.9, 0.7, -0.4, 0.8, 0.5, -0.6, 0.9, -0.3], dtype=torch.float64)
    vertices, sdf = vertices[None].requires_grad_(), sdf[None].requires_grad_()

    def surface(vertices, sdf):
        return marching_tetrahedra(vertices, tets, sdf)[0][0]

    assert surface(vertices, sdf).shape[0] > 3
    assert torch.autograd.gradcheck(surface, (vertices, sdf), eps=1e-6, atol=1e-6)


def test_gradients_reach_inputs_from_empty_surface_graph():
    vertices, tets = kuhn_tet_grid(2)
    sdf = torch.ones(1, vertices.shape[0], requires_grad=True)
    verts, _ = marching_tetrahedra(vertices[None], tets, sdf)
    verts[0].sum().backward()  # an empty surface still backpropagates (zeros)
    assert sdf.grad is not None and not bool(sdf.grad.any())


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("vertices", "tets", "sdf", "match"),
    [
        (UNIT_TET[0], ONE_TET, torch.zeros(1, 4), "vertices must be"),
        (UNIT_TET, ONE_TET[:, :3], torch.zeros(1, 4), "tets must be"),
        (UNIT_TET, ONE_TET.int(), torch.zeros(1, 4), "tets must be a long"),
        (UNIT_TET, ONE_TET, torch.zeros(4), "sdf must be"),
        (UNIT_TET, ONE_TET, torch.zeros(1, 5), "sdf must be"),
        (UNIT_TET, ONE_TET, torch.tensor([[0.0, float("nan"), 1.0, 1.0]]), "sdf contains NaN"),
    ],
)
def test_bad_inputs_raise(vertices, tets, sdf, match):
    with pytest.raises(ValueError, match=match):
        marching_tetrahedra(vertices, tets, sdf)


# ---------------------------------------------------------------------- backends
def test_kaolin_backend_on_cpu_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "kaolin", _fake_kaolin([]))
    with pytest.raises(RuntimeError, match="CUDA"):
        marching_tetrahedra(UNIT_TET, ONE_TET, torch.zeros(1, 4), backend="kaolin")


def test_kaolin_backend_without_kaolin_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "kaolin", None)  # makes `import kaolin` fail
    with pytest.raises(RuntimeError, match="not importable"):
        marching_tetrahedra(UNIT_TET, ONE_TET, torch.zeros(1, 4), backend="kaolin")


def test_kaolin_backend_delegates(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setitem(sys.modules, "kaolin", _fake_kaolin(calls))
    seen: list[tuple] = []

    def fake_resolve(backend, device):
        seen.append((backend, torch.device(device)))
        return "kaolin"

    monkeypatch.setattr(mt, "resolve_backend", fake_resolve)
    sdf = torch.tensor([[-1.0, -1.0, 0.5, 0.5]])
    out = marching_tetrahedra(UNIT_TET, ONE_TET, sdf, True, backend="kaolin")
    assert seen == [("kaolin", torch.device("cpu"))]
    assert len(calls) == 1
    args = calls[0]
    assert args[0] is UNIT_TET and args[1] is ONE_TET and args[2] is sdf and args[3] is True
    verts, faces, tet_idx = out
    assert isinstance(verts, list) and faces[0].tolist() == [[7, 7, 7]]
    assert tet_idx[0].tolist() == [3]


def _fake_kaolin(calls: list) -> types.ModuleType:
    def fake_marching_tetrahedra(vertices, tets, sdf, return_tet_idx=False):
        calls.append((vertices, tets, sdf, return_tet_idx))
        b = vertices.shape[0]
        out = [
            tuple(torch.zeros(1, 3) for _ in range(b)),
            tuple(torch.full((1, 3), 7) for _ in range(b)),
        ]
        if return_tet_idx:
            out.append(tuple(torch.tensor([3]) for _ in range(b)))
        return out  # Kaolin returns a list of per-batch tuples

    kaolin = types.ModuleType("kaolin")
    kaolin.ops = types.SimpleNamespace(
        conversions=types.SimpleNamespace(marching_tetrahedra=fake_marching_tetrahedra)
    )
    return kaolin


# ---------------------------------------------------------------------- grid
@pytest.mark.parametrize("resolution", [1, 3])
def test_kuhn_grid_shapes_orientation_and_conformity(resolution):
    vertices, tets = kuhn_tet_grid(resolution, -0.5, 1.5)
    n = resolution
    assert vertices.shape == ((n + 1) ** 3, 3) and tets.shape == (6 * n**3, 4)
    assert tets.dtype == torch.long
    assert vertices.min().item() == -0.5 and vertices.max().item() == 1.5
    volumes = tet_volumes(vertices, tets)
    cell = 2.0 / n
    torch.testing.assert_close(volumes, torch.full_like(volumes, cell**3 / 6))
    # Conforming: every interior triangle is shared by exactly 2 tets, boundary ones by 1,
    # and the boundary triangles tile the cube's surface (2 per square).
    tri = torch.cat(
        [tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]]
    )
    _, counts = torch.unique(torch.sort(tri, dim=1).values, dim=0, return_counts=True)
    assert set(counts.tolist()) <= {1, 2}
    assert int((counts == 1).sum()) == 6 * 2 * n**2


def test_kuhn_grid_validates():
    with pytest.raises(ValueError, match="resolution"):
        kuhn_tet_grid(0)
    with pytest.raises(ValueError, match="bbox_min"):
        kuhn_tet_grid(2, 1.0, -1.0)
    vertices, _ = kuhn_tet_grid(2, dtype=torch.float64)
    assert vertices.dtype == torch.float64
