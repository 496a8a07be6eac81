"""The generalised winding number of a triangle mesh (Jacobson et al. 2013): inside or outside.

The sum of the signed solid angles that the triangles subtend at a point, divided by 4π. It is 1
inside and 0 outside a closed, outward-oriented mesh and degrades gracefully (values near 0.5 only
close to holes) for the slightly open or self-intersecting meshes that marching tetrahedra and
DMTet produce, where ray-parity tests flip whole regions. The exact sum costs O(points x faces);
by default far-away clusters of triangles are replaced by their dipole (the far-field idea of
Barill et al. 2018), which makes a 48³ grid against a 5k-face mesh a fraction of a second on a
CPU. Pure PyTorch, any device, no gradients (it is a metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_ops import face_normals

_XYZ = tuple[Tensor, Tensor, Tensor]


def _solid_angles_xyz(a: _XYZ, b: _XYZ, c: _XYZ) -> Tensor:
    """Signed solid angles of triangles (van Oosterom & Strackee 1983), coordinates split.

    Args:
        a, b, c: x, y, z components of the corners relative to the query points, broadcastable
            tensors of any shape (corners counter-clockwise seen from outside).

    Returns:
        Solid angles in steradians, positive seen from the inner side.
    """
    # Components are kept in separate contiguous tensors: reductions over a size-3 axis and
    # strided views are several times slower in PyTorch than plain elementwise ops.
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = a, b, c
    la = (ax * ax + ay * ay + az * az).sqrt()
    lb = (bx * bx + by * by + bz * bz).sqrt()
    lc = (cx * cx + cy * cy + cz * cz).sqrt()
    det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
    denom = (
        la * lb * lc
        + (ax * bx + ay * by + az * bz) * lc
        + (bx * cx + by * cy + bz * cz) * la
        + (cx * ax + cy * ay + cz * az) * lb
    )
    # atan2 (not atan of the ratio) keeps the right branch when the denominator is negative.
    return 2.0 * torch.atan2(det, denom)


def _relative_corners(tri: Tensor, px: Tensor, py: Tensor, pz: Tensor) -> tuple[_XYZ, _XYZ, _XYZ]:
    """Corners ``tri`` (..., 3 corners, 3 coords, L) minus points (..., B, 1) -> (..., B, L)."""
    out = []
    for corner in range(3):
        t = tri[..., corner, :, None, :]  # (..., 3 coords, 1, L)
        out.append((t[..., 0, :, :] - px, t[..., 1, :, :] - py, t[..., 2, :, :] - pz))
    return out[0], out[1], out[2]


@dataclass
class _ClusterTree:
    """A balanced binary tree over the faces for far-field winding numbers.

    Level ``l`` has ``2**l`` nodes; node ``i`` at level ``l`` has children ``2i, 2i+1``. The
    leaves hold ``L`` triangles each (the last ones padded with zero-area triangles, which
    subtend no solid angle).

    Attributes:
        leaves: (K, 3 corners, 3 coords, L) triangle corners per leaf, K = 2**depth.
        centers: per level (2**l, 3) area-weighted centroids.
        radii: per level (2**l,) radius of a ball around the centre holding all the triangles.
        normals: per level (2**l, 3) sums of area vectors (the cluster's dipole moment).
    """

    leaves: Tensor
    centers: list[Tensor]
    radii: list[Tensor]
    normals: list[Tensor]

    @property
    def depth(self) -> int:
        return len(self.centers) - 1


def _build_cluster_tree(tri: Tensor, leaf_size: int) -> _ClusterTree:
    """Median-split kd-tree over (F, 3, 3) triangles' centroids, built level by level."""
    num_faces = tri.shape[0]
    depth = max(0, math.ceil(math.log2(max(num_faces / leaf_size, 1.0))))
    num_leaves = 2**depth
    per_leaf = math.ceil(num_faces / num_leaves)
    pad = num_leaves * per_leaf - num_faces
    if pad:
        anchor = tri[:1].mean(dim=1, keepdim=True)  # degenerate triangles at a face centroid
        tri = torch.cat([tri, anchor.expand(pad, 3, 3)])
    centroid = tri.mean(dim=1)
    order = torch.arange(len(tri), device=tri.device)
    for level in range(depth):
        groups = 2**level
        cent = centroid[order].view(groups, -1, 3)
        axis = (cent.amax(dim=1) - cent.amin(dim=1)).argmax(dim=-1)  # longest extent per group
        key = cent.gather(2, axis.view(groups, 1, 1).expand(groups, cent.shape[1], 1))
        perm = key.squeeze(-1).argsort(dim=1, stable=True)
        order = order.view(groups, -1).gather(1, perm).reshape(-1)
    leaves = tri[order].view(num_leaves, per_leaf, 3, 3)

    # Leaf statistics, then merge pairs of children up to the root.
    area_vec = 0.5 * face_normals(leaves)  # (K, L, 3)
    area = area_vec.norm(dim=-1)  # (K, L)
    weight = area.sum(dim=1)
    leaf_centroid = leaves.mean(dim=2)
    plain = leaf_centroid.mean(dim=1)
    weighted = (area[..., None] * leaf_centroid).sum(dim=1) / weight.clamp_min(1e-30)[:, None]
    center = torch.where(weight[:, None] > 0, weighted, plain)
    radius = (leaves - center[:, None, None, :]).norm(dim=-1).flatten(1).amax(dim=1)
    normal = area_vec.sum(dim=1)
    centers, radii, normals = [center], [radius], [normal]
    for _ in range(depth):
        child_w = weight.view(-1, 2)
        child_c = center.view(-1, 2, 3)
        weight = child_w.sum(dim=1)
        weighted = (child_w[..., None] * child_c).sum(dim=1) / weight.clamp_min(1e-30)[:, None]
        center = torch.where(weight[:, None] > 0, weighted, child_c.mean(dim=1))
        offset = (child_c - center[:, None, :]).norm(dim=-1)
        radius = (offset + radius.view(-1, 2)).amax(dim=1)
        normal = normal.view(-1, 2, 3).sum(dim=1)
        centers.insert(0, center)
        radii.insert(0, radius)
        normals.insert(0, normal)
    return _ClusterTree(leaves.permute(0, 2, 3, 1).contiguous(), centers, radii, normals)


def _spread_bits(x: Tensor) -> Tensor:
    """Insert two zero bits between each of the low 10 bits of ``x`` (Morton encoding)."""
    x = (x | (x << 16)) & 0x030000FF
    x = (x | (x << 8)) & 0x0300F00F
    x = (x | (x << 4)) & 0x030C30C3
    return (x | (x << 2)) & 0x09249249


def _morton_order(points: Tensor) -> Tensor:
    """(P, 3) -> (P,) permutation listing the points along a Z-order curve."""
    lo, hi = points.amin(dim=0), points.amax(dim=0)
    q = ((points - lo) / (hi - lo).clamp_min(1e-12) * 1023).long().clamp(0, 1023)
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << 1) | (_spread_bits(q[:, 2]) << 2)
    return code.argsort()


def _tree_solid_angle(
    tree: _ClusterTree, points: Tensor, beta: float, block: int, budget: int
) -> Tensor:
    """(P, 3) points -> (P,) total solid angle, far clusters approximated by their dipole.

    Points are grouped into spatially compact blocks of ``block`` points (Z-order); the tree is
    descended per (block, cluster) pair, so one decision covers a whole block, and the block's
    points are then evaluated with dense tensor ops. A cluster is far for a block when its
    distance exceeds ``beta * radius + block radius``, i.e. far for every point of the block.
    """
    num = len(points)
    order = _morton_order(points)
    num_blocks = math.ceil(num / block)
    padded = torch.cat([order, order[-1:].expand(num_blocks * block - num)])
    blocks = points[padded].view(num_blocks, block, 3)
    bx, by, bz = (blocks[..., k].contiguous() for k in range(3))  # (nb, B) each
    block_center = (blocks.amax(dim=1) + blocks.amin(dim=1)) / 2
    block_radius = (blocks - block_center[:, None]).norm(dim=-1).amax(dim=1)
    total = torch.zeros(num_blocks, block, dtype=points.dtype, device=points.device)

    blk = torch.arange(num_blocks, device=points.device)
    node = torch.zeros_like(blk)
    children = torch.tensor([0, 1], device=points.device)
    step = max(1, budget // block)

    def add_dipoles(fb: Tensor, fn: Tensor, level: int, per_point: bool) -> Tensor | None:
        """Add the dipole terms of clusters ``fn`` to all points of blocks ``fb``; with
        ``per_point``, only where the point itself is far and return the (n, B) near mask."""
        c, n = tree.centers[level][fn], tree.normals[level][fn]
        dx, dy, dz = c[:, 0:1] - bx[fb], c[:, 1:2] - by[fb], c[:, 2:3] - bz[fb]
        d2 = dx * dx + dy * dy + dz * dz
        # Solid angle of a small patch with area vector n at offset r: n·r / |r|³.
        dipole = (n[:, 0:1] * dx + n[:, 1:2] * dy + n[:, 2:3] * dz) * d2.rsqrt() / d2
        near = None
        if per_point:
            near = d2 <= (beta * tree.radii[level][fn, None]) ** 2
            dipole = dipole.masked_fill(near, 0.0)
        total.index_add_(0, fb, dipole)
        return near

    for level in range(tree.depth + 1):
        dist = (tree.centers[level][node] - block_center[blk]).norm(dim=-1)
        far = dist > beta * tree.radii[level][node] + block_radius[blk]
        far_blk, far_node = blk[far], node[far]
        for s in range(0, len(far_blk), step):
            add_dipoles(far_blk[s : s + step], far_node[s : s + step], level, per_point=False)
        blk, node = blk[~far], node[~far]
        if level < tree.depth:
            blk = blk[:, None].expand(-1, 2).reshape(-1)
            node = (2 * node[:, None] + children).reshape(-1)

    # Leaves near a block: decide per point (most points of the block are still far), then sum
    # the exact solid angles of the leaf's triangles for the near (point, leaf) pairs only.
    flat = [bx.view(-1), by.view(-1), bz.view(-1)]
    pair_step = max(1, budget // tree.leaves.shape[-1])
    for s in range(0, len(blk), step):
        b, leaf = blk[s : s + step], node[s : s + step]
        near = add_dipoles(b, leaf, tree.depth, per_point=True)
        pair, slot = near.nonzero(as_tuple=True)
        point, leaf = b[pair] * block + slot, leaf[pair]
        for t in range(0, len(point), pair_step):
            p, lf = point[t : t + pair_step], leaf[t : t + pair_step]
            corners = _relative_corners(tree.leaves[lf], *(f[p, None, None] for f in flat))
            total.view(-1).index_add_(0, p, _solid_angles_xyz(*corners).sum(dim=(-2, -1)))
    out = torch.empty(num, dtype=points.dtype, device=points.device)
    out[order] = total.reshape(-1)[:num]
    return out


def _exact_solid_angle(tri: Tensor, points: Tensor, budget: int) -> Tensor:
    """(P, 3) points -> (P,) total solid angle of all (F, 3, 3) triangles, O(P F)."""
    tri = tri.permute(1, 2, 0)  # (3 corners, 3 coords, F)
    step = max(1, budget // max(1, tri.shape[-1]))
    out = []
    for s in range(0, len(points), step):
        p = points[s : s + step, :, None]  # (n, 3, 1)
        corners = _relative_corners(tri, p[:, 0], p[:, 1], p[:, 2])
        out.append(_solid_angles_xyz(*corners).sum(dim=-1))
    return torch.cat(out) if out else points.new_zeros(0)


def _check_mesh_for_winding(mesh: Mesh) -> Tensor:
    if mesh.num_faces == 0:
        raise ValueError("winding_number: the mesh has no faces")
    tri = mesh.vertices[mesh.faces.long()].detach()  # (F, 3, 3)
    if not bool(torch.isfinite(tri).all()):
        raise ValueError("winding_number: the mesh has NaN or infinite vertices")
    return tri


def winding_number(
    mesh: Mesh,
    points: Tensor,
    chunk: int = 65536,
    beta: float | None = 2.0,
    leaf_size: int = 8,
    block_size: int = 32,
) -> Tensor:
    """Generalised winding number of ``mesh`` at ``points``.

    ``w(p) = Σ_faces Ω_f(p) / 4π`` with the van Oosterom–Strackee solid angle. For a closed,
    outward-oriented (counter-clockwise from outside) mesh it is 1 inside, 0 outside and 1/2 on
    the surface; inverted meshes give -1 inside; small holes only blur it locally.

    Args:
        mesh: (V, 3) vertices, (F, 3) faces.
        points: (P, 3) query points (same device; cast to the vertices' dtype).
        chunk: points per batch, bounding memory.
        beta: far-field acceptance ratio. A cluster of faces whose bounding ball (radius r) is
            farther than ``beta * r`` from a point contributes its dipole term instead of its
            exact solid angles. ``None`` computes the exact O(P x F) sum. With the default 2.0
            the error stays far below the 0.5 inside/outside threshold (measured against the
            exact sum on spheres, a torus and the ant mesh: < 0.025 at worst, ~0.003 on
            average; beta=3 roughly halves it at ~1.5x the cost).
        leaf_size: faces per leaf cluster of the far-field tree.
        block_size: query points that descend the tree together.

    Returns:
        (P,) winding numbers (no gradient).
    """
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"winding_number: points must be (P, 3), got {tuple(points.shape)}")
    with torch.no_grad():
        tri = _check_mesh_for_winding(mesh)
        points = points.detach().to(tri)
        if not bool(torch.isfinite(points).all()):
            raise ValueError("winding_number: the query points contain NaN or infinity")
        tree = None if beta is None else _build_cluster_tree(tri, leaf_size)
        budget = 1 << 20  # elements per temporary (~4 MB in float32): stays cache-friendly
        out = []
        for start in range(0, len(points), chunk):
            part = points[start : start + chunk]
            if tree is None:
                out.append(_exact_solid_angle(tri, part, budget))
            else:
                out.append(_tree_solid_angle(tree, part, beta, block_size, budget))
        total = torch.cat(out) if out else points.new_zeros(0)
        return total / (4.0 * math.pi)
