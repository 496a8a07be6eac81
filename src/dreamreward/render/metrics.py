"""Evaluation metrics for renders and meshes.

- :func:`psnr` for images.
- :func:`sample_surface`, :func:`nearest_neighbor_distances`, :func:`chamfer_distance` for
  surfaces.
- :func:`volume_iou` for solids (inside/outside by
  :func:`~dreamreward.render.winding_number.winding_number`), and :func:`mesh_metrics` bundling
  the mesh metrics we log for reconstructions.

All functions are pure PyTorch and run on any device; they are metrics, so everything except
:func:`sample_surface` and the distances returned by :func:`nearest_neighbor_distances` /
:func:`chamfer_distance` is computed without gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_ops import face_normals
from dreamreward.render.winding_number import winding_number

__all__ = [
    "chamfer_distance",
    "mesh_metrics",
    "nearest_neighbor_distances",
    "psnr",
    "sample_surface",
    "volume_iou",
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
    tri = mesh.vertices[mesh.faces.long()]  # (F, 3, 3)
    area = 0.5 * face_normals(tri.detach()[None])[0].norm(dim=-1)
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
