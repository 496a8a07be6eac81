"""Procedural tetrahedral grids for DMTet.

DMTet/threestudio ship pre-computed tet grids (``load/tets/{N}_tets.npz``). We build the grid
instead: the Kuhn (Freudenthal) subdivision of a regular cube lattice. Each cube is split into
6 tetrahedra that all share the cube's main diagonal (corner (0,0,0) to corner (1,1,1)); tet
``k`` walks from the first corner to the opposite one adding one unit axis step at a time, in
the order given by the ``k``-th permutation of (x, y, z).

Because every cube uses the *same* (translated, never mirrored) split, the triangulation is
conforming: two neighbouring cubes cut their shared square face along the same diagonal, so
their tets share faces exactly and a marching-tets surface extracted from the grid is
watertight (as long as it does not leave the grid's bounding box).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

# The 6 axis orders of the Kuhn split, each with the sign of its permutation. The tet
# (0, e_a, e_a + e_b, e_a + e_b + e_c) has signed volume sign(a, b, c) / 6, so odd permutations
# get two vertices swapped below to make every tet positively oriented. Marching tets relies on
# that: its triangle table orients faces consistently only on positively oriented tets.
_AXIS_ORDERS: tuple[tuple[int, int, int], ...] = tuple(itertools.permutations(range(3)))


def _permutation_is_odd(perm: tuple[int, ...]) -> bool:
    inversions = sum(perm[i] > perm[j] for i in range(len(perm)) for j in range(i + 1, len(perm)))
    return inversions % 2 == 1


def kuhn_tet_grid(
    resolution: int,
    bbox_min: float = -1.0,
    bbox_max: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """A conforming tetrahedral grid of ``resolution``³ cubes, 6 tets per cube.

    Vertices are the lattice points of the cube ``[bbox_min, bbox_max]³``; vertex ``(i, j, k)``
    (along x, y, z) has index ``(i * (n + 1) + j) * (n + 1) + k``. Every tet has positive
    volume (``det(v1 - v0, v2 - v0, v3 - v0) > 0``).

    Args:
        resolution: cubes per axis ``n`` (>= 1).
        bbox_min, bbox_max: extent of the grid on every axis (``bbox_min < bbox_max``).
        device: device of the outputs (default: CPU).
        dtype: floating dtype of the vertices (default: ``torch.get_default_dtype()``).

    Returns:
        vertices: (V, 3) float with ``V = (n + 1)³``.
        tets: (T, 4) long vertex indices with ``T = 6 n³``.

    Raises:
        ValueError: ``resolution < 1`` or an empty bounding box.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    if not bbox_min < bbox_max:
        raise ValueError(f"need bbox_min < bbox_max, got {bbox_min} and {bbox_max}")
    dtype = dtype or torch.get_default_dtype()
    n, m = resolution, resolution + 1

    axis = torch.linspace(bbox_min, bbox_max, m, device=device, dtype=dtype)
    vertices = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)

    # Index offset of one step along x, y, z in the flattened lattice.
    stride = (m * m, m, 1)
    # (6, 4) offsets of the tets' corners from their cube's (0, 0, 0) corner.
    offsets = []
    for order in _AXIS_ORDERS:
        corners = [0]
        for ax in order:
            corners.append(corners[-1] + stride[ax])
        if _permutation_is_odd(order):
            corners[1], corners[2] = corners[2], corners[1]
        offsets.append(corners)
    offsets_t = torch.tensor(offsets, dtype=torch.long, device=device)

    # Index of every cube's (0, 0, 0) corner, cubes in (i, j, k) row-major order.
    cube = torch.arange(n, dtype=torch.long, device=device)
    base = (cube[:, None, None] * m + cube[None, :, None]) * m + cube[None, None, :]
    tets = (base.reshape(-1, 1, 1) + offsets_t).reshape(-1, 4)
    return vertices, tets


def tet_volumes(vertices: Tensor, tets: Tensor) -> Tensor:
    """Signed volumes (T,) of tets (T, 4) over vertices (V, 3); positive = positively oriented."""
    v = vertices[tets]  # (T, 4, 3)
    edges = v[:, 1:] - v[:, :1]  # (T, 3, 3)
    return torch.linalg.det(edges) / 6.0
