"""Evaluation metrics for renders and meshes.

- :func:`psnr` for images.
- :func:`sample_surface`, :func:`nearest_neighbor_distances`, :func:`chamfer_distance` for
  surfaces.
- :func:`winding_number`, :func:`volume_iou` for solids, and :func:`mesh_metrics` bundling the
  mesh metrics we log for reconstructions.

Inside/outside tests use the generalised winding number (Jacobson et al. 2013): the sum of the
signed solid angles that the triangles subtend, divided by 4π. It is 1 inside and 0 outside a
closed, outward-oriented mesh and degrades gracefully (values near 0.5 only close to holes) for
the slightly open or self-intersecting meshes that marching tetrahedra and DMTet produce, where
ray-parity tests flip whole regions. The exact sum costs O(points x faces); by default far-away
clusters of triangles are replaced by their dipole (the far-field idea of Barill et al. 2018), which
makes a 48³ grid against a 5k-face mesh a fraction of a second on a CPU.

All functions are pure PyTorch and run on any device; they are metrics, so everything except
:func:`sample_surface` and the distances returned by :func:`nearest_neighbor_distances` /
:func:`chamfer_distance` is computed without gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dreamreward.render.mesh import Mesh

__all__ = [
    "chamfer_distance",
    "mesh_metrics",
    "nearest_neighbor_distances",
    "psnr",
    "sample_surface",
    "volume_iou",
    "winding_number",
]


# --------------------------------------------------------------------------------------- images
def psnr(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    max_val: float = 1.0,
) -> Tensor:
    """Peak signal-to-noise ratio of each image, in dB.

    Args:
        pred, target: (N, ...) images of the same shape, e.g. (N, H, W, C) or (N, C, H, W).
            Integer images are cast to float: pass ``max_val=255`` for uint8.
        mask: optional (N, H, W), (N, H, W, 1) or full-shape weights / booleans; the MSE is the
            mean over masked elements only. Trailing dimensions are added to broadcast.
        max_val: peak value of the signal.

    Returns:
        (N,) PSNR per image. Identical images give ``inf`` (no cap: filter or clamp before
        averaging); an image whose mask is empty gives ``nan``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.ndim < 2:
        raise ValueError(f"psnr: expected a batch (N, ...) of images, got {tuple(pred.shape)}")
    dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    with torch.no_grad():
        err = (pred.to(dtype) - target.to(dtype)).square()
        n = err.shape[0]
        if mask is None:
            mse = err.reshape(n, -1).mean(dim=1)
        else:
            weights = mask.to(device=err.device, dtype=dtype)
            while weights.ndim < err.ndim:
                weights = weights.unsqueeze(-1)
            weights = weights.expand_as(err)
            mse = (err * weights).reshape(n, -1).sum(1) / weights.reshape(n, -1).sum(1)
        return 10.0 * torch.log10(max_val**2 / mse)


# ------------------------------------------------------------------------------------- surfaces
def _face_corners(mesh: Mesh) -> Tensor:
    """(F, 3, 3) triangle corner positions."""
    return mesh.vertices[mesh.faces.long()]


def _area_vectors(tri: Tensor) -> Tensor:
    """(..., 3, 3) triangles -> (..., 3) normals scaled by the triangle area."""
    return 0.5 * torch.linalg.cross(
        tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]
    )


def sample_surface(
    mesh: Mesh,
    num_points: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniform random points on the surface (faces drawn by area, uniform inside each face).

    Differentiable with respect to ``mesh.vertices`` (the face choice is not).

    Args:
        mesh: triangle mesh (V vertices, F faces).
        num_points: P.
        generator: optional generator on the mesh's device, for reproducible samples.

    Returns:
        (P, 3) points, dtype and device of ``mesh.vertices``.

    Raises:
        ValueError: no faces, or a total area that is zero or not finite.
    """
    if mesh.num_faces == 0:
        raise ValueError("sample_surface: the mesh has no faces")
    tri = _face_corners(mesh)
    area = _area_vectors(tri.detach()).norm(dim=-1)
    total = float(area.sum())
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"sample_surface: the mesh's total area is {total}; nothing to sample")
    face = torch.multinomial(area, num_points, replacement=True, generator=generator)
    r = torch.rand(num_points, 2, generator=generator, device=tri.device, dtype=tri.dtype)
    # sqrt warps the unit square onto the triangle with uniform density (Osada et al. 2002).
    s = r[:, 0].sqrt()
    bary = torch.stack([1.0 - s, s * (1.0 - r[:, 1]), s * r[:, 1]], dim=-1)  # (P, 3)
    return (bary[:, :, None] * tri[face]).sum(dim=1)


def nearest_neighbor_distances(
    points_a: Tensor,
    points_b: Tensor,
    chunk: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Euclidean distance from every point to its nearest neighbour in the other set.

    The neighbour search runs without gradients on blocks of ``chunk`` rows of ``points_a``
    (memory ``chunk x Q``) using the fast ``|a|² - 2a·b + |b|²`` expansion; the returned
    distances are then recomputed exactly as ``|a - b[nn]|`` so that they are accurate near zero
    and differentiable with respect to both point sets.

    Args:
        points_a: (P, 3).
        points_b: (Q, 3).
        chunk: rows of ``points_a`` per block.

    Returns:
        (P,) distances a -> b and (Q,) distances b -> a.
    """
    if points_a.ndim != 2 or points_b.ndim != 2 or points_a.shape[1] != points_b.shape[1]:
        raise ValueError(
            f"expected (P, D) and (Q, D) point sets, got {tuple(points_a.shape)} and "
            f"{tuple(points_b.shape)}"
        )
    if len(points_a) == 0 or len(points_b) == 0:
        raise ValueError("nearest_neighbor_distances: a point set is empty")
    with torch.no_grad():
        # Centring first keeps the expansion's cancellation error small.
        shift = torch.cat([points_a, points_b]).mean(dim=0)
        a, b = points_a.detach() - shift, points_b.detach() - shift
        b_sq = b.square().sum(-1)
        nn_of_a = torch.empty(len(a), dtype=torch.long, device=a.device)
        best_b = torch.full_like(b_sq, math.inf)
        nn_of_b = torch.zeros(len(b), dtype=torch.long, device=b.device)
        for start in range(0, len(a), chunk):
            block = a[start : start + chunk]
            d2 = block.square().sum(-1, keepdim=True) - 2.0 * block @ b.T + b_sq
            nn_of_a[start : start + chunk] = d2.argmin(dim=1)
            value, index = d2.min(dim=0)
            closer = value < best_b
            best_b = torch.where(closer, value, best_b)
            nn_of_b = torch.where(closer, index + start, nn_of_b)
    dist_a = (points_a - points_b[nn_of_a]).norm(dim=-1)
    dist_b = (points_b - points_a[nn_of_b]).norm(dim=-1)
    return dist_a, dist_b


def chamfer_distance(points_a: Tensor, points_b: Tensor, chunk: int = 1024) -> Tensor:
    """Symmetric Chamfer distance ``(mean_a d(a, B) + mean_b d(b, A)) / 2``.

    Distances are Euclidean (L2, *not* squared), so the value is in world units: two concentric
    spheres give about the difference of their radii. Differentiable.

    Args:
        points_a: (P, 3).
        points_b: (Q, 3).
        chunk: rows per block of the neighbour search (memory ``chunk x Q``).

    Returns:
        () scalar tensor.
    """
    dist_a, dist_b = nearest_neighbor_distances(points_a, points_b, chunk)
    return 0.5 * (dist_a.mean() + dist_b.mean())


# ------------------------------------------------------------------------------ winding numbers
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
    area_vec = _area_vectors(leaves)  # (K, L, 3)
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
    tri = _face_corners(mesh).detach()
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


# --------------------------------------------------------------------------------------- volume
def _bbox(mesh: Mesh) -> Tensor:
    """(2, 3) axis-aligned bounding box (min row, max row)."""
    v = mesh.vertices.detach()
    return torch.stack([v.amin(dim=0), v.amax(dim=0)])


def _occupancy(mesh: Mesh, points: Tensor, beta: float | None) -> Tensor:
    # |w| > 1/2 so that a consistently inverted mesh (w = -1 inside) still counts as solid.
    return winding_number(mesh, points, beta=beta).abs() > 0.5


def volume_iou(
    mesh_a: Mesh,
    mesh_b: Mesh,
    resolution: int = 64,
    num_points: int | None = None,
    bbox: Tensor | None = None,
    generator: torch.Generator | None = None,
    beta: float | None = 2.0,
) -> float:
    """Volumetric intersection over union of two meshes' occupancies.

    A point is inside a mesh when ``|winding_number| > 0.5``. The points are the cell centres of
    a ``resolution³`` grid spanning ``bbox`` (default: the union of both bounding boxes), or
    ``num_points`` uniform random points in it when given.

    Args:
        mesh_a, mesh_b: meshes in the same frame and on the same device.
        resolution: grid cells per axis (ignored when ``num_points`` is set).
        num_points: use this many random points instead of the grid.
        bbox: (2, 3) min and max corners.
        generator: for the random points.
        beta: far-field ratio of :func:`winding_number` (``None``: exact).

    Returns:
        IoU in [0, 1]; ``nan`` when neither mesh encloses any sample point.
    """
    with torch.no_grad():
        if bbox is None:
            boxes = torch.stack([_bbox(mesh_a), _bbox(mesh_b).to(mesh_a.vertices)])
            bbox = torch.stack([boxes[:, 0].amin(dim=0), boxes[:, 1].amax(dim=0)])
        bbox = torch.as_tensor(bbox, dtype=mesh_a.vertices.dtype, device=mesh_a.vertices.device)
        if bbox.shape != (2, 3):
            raise ValueError(f"volume_iou: bbox must be (2, 3), got {tuple(bbox.shape)}")
        lo, hi = bbox[0], bbox[1]
        if num_points is not None:
            u = torch.rand(num_points, 3, generator=generator, dtype=lo.dtype, device=lo.device)
        else:
            if resolution < 1:
                raise ValueError(f"volume_iou: resolution must be >= 1, got {resolution}")
            # Cell centres never lie on the bbox faces, where the winding number is 1/2.
            ticks = (torch.arange(resolution, dtype=lo.dtype, device=lo.device) + 0.5) / resolution
            u = torch.cartesian_prod(ticks, ticks, ticks)
        points = lo + u * (hi - lo)
        inside_a = _occupancy(mesh_a, points, beta)
        inside_b = _occupancy(mesh_b, points, beta)
        union = int((inside_a | inside_b).sum())
        if union == 0:
            return math.nan
        return int((inside_a & inside_b).sum()) / union


def mesh_metrics(
    pred: Mesh,
    reference: Mesh,
    num_points: int = 10_000,
    resolution: int = 48,
    fscore_threshold: float = 0.02,
    seed: int = 0,
) -> dict[str, float]:
    """Reconstruction quality of ``pred`` against ``reference`` (same frame, world units).

    Both surfaces are sampled with generators seeded by ``seed``, so the result is
    deterministic and a mesh compared with itself scores exactly chamfer 0, IoU 1, F-score 1.

    Args:
        pred, reference: meshes.
        num_points: surface samples per mesh for Chamfer distance and F-score.
        resolution: grid cells per axis for the volumetric IoU.
        fscore_threshold: distance (world units) under which a sample counts as matched.
        seed: sampling seed.

    Returns:
        ``{"chamfer": ..., "fscore": ..., "iou": ...}``: Chamfer distance as in
        :func:`chamfer_distance`, F-score (harmonic mean of the fractions of pred / reference
        samples within ``fscore_threshold`` of the other surface) and :func:`volume_iou`.
    """

    def samples(mesh: Mesh) -> Tensor:
        gen = torch.Generator(device=mesh.vertices.device).manual_seed(seed)
        return sample_surface(mesh.detach(), num_points, generator=gen)

    with torch.no_grad():
        points_pred, points_ref = samples(pred), samples(reference)
        dist_pred, dist_ref = nearest_neighbor_distances(points_pred, points_ref)
        chamfer = 0.5 * (dist_pred.mean() + dist_ref.mean())
        precision = (dist_pred < fscore_threshold).float().mean()
        recall = (dist_ref < fscore_threshold).float().mean()
        fscore = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return {
        "chamfer": float(chamfer),
        "fscore": float(fscore),
        "iou": volume_iou(pred, reference, resolution=resolution),
    }
