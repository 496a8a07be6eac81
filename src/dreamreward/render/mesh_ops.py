"""Mesh geometry ops and regularisers (normals, adjacency, sparse uniform Laplacian).

Contracts mirror ``kaolin.ops.mesh`` where Kaolin has the op (``face_normals``,
``uniform_laplacian``), with one deliberate difference: our uniform Laplacian is a *sparse*
(V, V) tensor, where Kaolin materialises a dense V x V matrix (4 GB of float32 at V = 32k).
All ops are pure PyTorch, differentiable w.r.t. vertex positions and work on CPU or CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_faces(faces: Tensor, name: str = "faces") -> None:
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"{name} must be (F, 3) triangle indices, got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be an integer tensor, got {faces.dtype}")


def _check_vertices(vertices: Tensor) -> None:
    if vertices.ndim not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (V, 3) or (B, V, 3), got {tuple(vertices.shape)}")


def face_normals(face_vertices: Tensor, unit: bool = False) -> Tensor:
    """Normals of triangles given by their corner positions (``kaolin.ops.mesh.face_normals``).

    Args:
        face_vertices: (B, F, 3, 3) corners (last dim xyz), counter-clockwise seen from the side
            the normal points to.
        unit: normalise to unit length. If False the length is twice the triangle's area.

    Returns:
        (B, F, 3) normals; zero-area faces give zero vectors (also when ``unit``).
    """
    if face_vertices.ndim != 4 or face_vertices.shape[-2:] != (3, 3):
        raise ValueError(
            f"face_vertices must be (B, F, 3, 3) triangles, got {tuple(face_vertices.shape)}"
        )
    v0, v1, v2 = face_vertices.unbind(dim=-2)
    normals = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    return F.normalize(normals, dim=-1) if unit else normals


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit area-weighted vertex normals.

    Each face adds its cross product (length 2 * area) to its three corners, so large faces
    weigh more, then the sums are normalised. Vertices used by no face get zero normals.

    Args:
        vertices: (V, 3) or (B, V, 3).
        faces: (F, 3) long indices shared by the batch.

    Returns:
        Normals with the shape of ``vertices``.
    """
    _check_vertices(vertices)
    _check_faces(faces)
    squeeze = vertices.ndim == 2
    verts = vertices.unsqueeze(0) if squeeze else vertices
    faces = faces.long()
    fn = face_normals(verts[:, faces], unit=False)  # (B, F, 3)
    out = torch.zeros_like(verts)
    # index_add is differentiable and deterministic on CPU; three adds avoid a repeat of fn.
    for corner in range(3):
        out = out.index_add(1, faces[:, corner], fn)
    out = F.normalize(out, dim=-1)
    return out[0] if squeeze else out


def _sorted_edges(faces: Tensor) -> Tensor:
    """(3F, 2) undirected edges (lower index first), edge k of face f at row 3 f + k."""
    e = torch.stack([faces, faces.roll(-1, dims=1)], dim=-1).reshape(-1, 2)
    return torch.sort(e, dim=-1).values


def edge_adjacent_faces(faces: Tensor) -> Tensor:
    """Pairs of faces sharing an edge, for manifold edges (used by exactly two faces).

    Boundary edges (one face) and non-manifold edges (three or more) are skipped.

    Args:
        faces: (F, 3) indices.

    Returns:
        (E, 2) long face indices, each row (f, g) with f < g, sorted by edge.
    """
    _check_faces(faces)
    faces = faces.long()
    if faces.shape[0] == 0:
        return torch.zeros(0, 2, dtype=torch.long, device=faces.device)
    edges = _sorted_edges(faces)
    num_v = int(faces.max()) + 1
    key = edges[:, 0] * num_v + edges[:, 1]
    key_sorted, order = torch.sort(key, stable=True)
    _, counts = torch.unique_consecutive(key_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    first = starts[counts == 2]
    owner = order // 3  # the face each sorted edge belongs to
    pairs = torch.stack([owner[first], owner[first + 1]], dim=-1)
    return torch.sort(pairs, dim=-1).values


def normal_consistency_loss(vertices: Tensor, faces: Tensor) -> Tensor:
    """Mean of ``1 - cos`` between the unit normals of faces sharing a (manifold) edge.

    Zero for a flat consistently-oriented surface, growing with creases; 0 when no edge is
    shared. A zero-area face has a zero normal, so its pairs count 1.

    Args:
        vertices: (V, 3) or (B, V, 3); a batch is averaged over too.
        faces: (F, 3).

    Returns:
        Scalar loss.
    """
    _check_vertices(vertices)
    pairs = edge_adjacent_faces(faces)
    verts = vertices.unsqueeze(0) if vertices.ndim == 2 else vertices
    if pairs.shape[0] == 0:
        return verts.sum() * 0.0  # keeps the graph (and the dtype/device) for callers
    n = face_normals(verts[:, faces.long()], unit=True)  # (B, F, 3)
    cos = (n[:, pairs[:, 0]] * n[:, pairs[:, 1]]).sum(-1)
    return (1.0 - cos).mean()


def uniform_laplacian(
    num_vertices: int, faces: Tensor, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Sparse uniform (umbrella) Laplacian, Kaolin's convention.

    ``L[i, j] = 1 / deg(i)`` for mesh neighbours j of i, ``L[i, i] = -1``, else 0, so every
    row sums to zero and ``L @ v`` is "mean of neighbours minus v". Isolated vertices get an
    all-zero row (Kaolin would divide by zero there).

    Args:
        num_vertices: V.
        faces: (F, 3) indices.
        dtype: value dtype.

    Returns:
        Coalesced sparse COO (V, V) tensor on ``faces.device``.

    Raises:
        ValueError: ``faces`` not (F, 3) integers, or indices outside [0, V).
    """
    _check_faces(faces)
    faces = faces.long()
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise ValueError(f"faces index vertices outside [0, num_vertices={num_vertices})")
    device = faces.device
    edges = _sorted_edges(faces)
    # Unique undirected edges through a 1-D integer key: ~50x faster than unique(dim=0).
    key = torch.unique(edges[:, 0] * num_vertices + edges[:, 1])
    edges = torch.stack([key // num_vertices, key % num_vertices], 1)
    rows = torch.cat([edges[:, 0], edges[:, 1]])
    cols = torch.cat([edges[:, 1], edges[:, 0]])
    deg = torch.zeros(num_vertices, dtype=dtype, device=device)
    deg.index_add_(0, rows, torch.ones(rows.shape[0], dtype=dtype, device=device))
    off_vals = 1.0 / deg[rows]
    diag = torch.arange(num_vertices, device=device)
    diag_vals = torch.where(deg > 0, -1.0, 0.0).to(dtype)
    indices = torch.stack([torch.cat([rows, diag]), torch.cat([cols, diag])])
    values = torch.cat([off_vals, diag_vals])
    # Indices are in range by construction: skip the (costly) invariant checks explicitly.
    return torch.sparse_coo_tensor(
        indices, values, (num_vertices, num_vertices), device=device, check_invariants=False
    ).coalesce()


def laplacian_smoothing_loss(vertices: Tensor, faces: Tensor) -> Tensor:
    """Mean squared length of the uniform Laplacian ``L @ v`` over vertices.

    The offset from each vertex to the mean of its neighbours is penalised squared (smooth at
    zero, unlike threestudio's mean of norms, which has an undefined gradient at flat vertices).

    Args:
        vertices: (V, 3) or (B, V, 3).
        faces: (F, 3).

    Returns:
        Scalar loss (averaged over vertices and batch).
    """
    _check_vertices(vertices)
    num_v = vertices.shape[-2]
    lap = uniform_laplacian(num_v, faces, dtype=vertices.dtype)
    verts = vertices.unsqueeze(0) if vertices.ndim == 2 else vertices
    b = verts.shape[0]
    flat = verts.permute(1, 0, 2).reshape(num_v, b * 3)  # (V, B*3): one sparse matmul
    delta = torch.sparse.mm(lap, flat)
    return delta.pow(2).reshape(num_v, b, 3).sum(-1).mean()
