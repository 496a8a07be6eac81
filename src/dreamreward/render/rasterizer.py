"""Differentiable triangle rasterization in pure PyTorch (``kaolin.render.mesh.rasterize``'s
contract), a SoftRas-style soft silhouette, and a one-call mesh renderer.

Conventions (see :mod:`dreamreward.render.cameras` and :func:`~dreamreward.render.rays.
pixel_centers_ndc`): OpenGL camera looking down -Z, so points in front of the camera have
negative camera-space z; NDC x right / y up in [-1, 1]; image row 0 at the top; pixel centres
at +0.5, i.e. pixel (row i, col j) sits at NDC ``x = (2j+1)/W - 1``, ``y = 1 - (2i+1)/H``.

How :func:`rasterize` works (why it is fast on a CPU):

1. *Index pass* (no autograd). Each face's pixel bounding box (clipped to the image) is covered
   by rectangular tiles (sides 1, 2, 3, 4, 6 or 8 px), grouped by tile shape, so a whole group
   is one broadcast (th, tw, n) computation with no per-pixel gathers: barycentrics and the
   inverse depth ``1/|z|`` are affine in screen space, evaluated as a column part plus a row
   part. Covered candidates pack ``(float32 bits of 1/|z|) << 32 | (face + 1)`` into one
   int64, and ``scatter_reduce(amax)`` keeps the nearest face per pixel (ties: the larger
   face index).
2. *Differentiable pass*. Only the winners are revisited: gather their corners, recompute
   screen barycentrics, correct them by ``1/z`` (perspective-correct interpolation) and
   interpolate the features, with a hand-written backward (one fused autograd node instead of
   ~100). Gradients reach ``face_vertices_image``, ``face_vertices_z`` and ``face_features``;
   which face wins a pixel is not differentiable, so silhouettes get no gradient here: use
   :func:`soft_silhouette` for that.

Work is chunked (:data:`_MAX_CANDIDATES` pixel candidates at a time) so memory stays bounded
and each step stays in cache; on a contended CPU, ``torch.set_num_threads(1)`` is often faster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from dreamreward.render.backend import Backend, import_kaolin, resolve_backend
from dreamreward.render.cameras import Cameras
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_ops import vertex_normals

# Pixel candidates per chunk: small enough to stay in cache (elementwise ops run ~4x faster
# there on CPU), large enough to amortise Python overhead.
_MAX_CANDIDATES = 1 << 16
# Covered pixels per chunk of the differentiable pass (same reason).
_INTERP_CHUNK = 1 << 15
# Tile sides: each box side n <= 8 gets the smallest side >= n; longer sides use several 8s.
_TILE_SIDES = (1, 2, 3, 4, 6, 8)
_SIDE_CLASS = (0, 0, 1, 2, 3, 4, 4, 5, 5)  # box side (clamped to 8) -> index in _TILE_SIDES
# Small problems are dominated by per-chunk Python overhead: there, fewer and square tile
# shapes (1, 2, 4, 8 only) beat the tighter fit.
_SQUARE_CLASS = (0, 0, 1, 3, 3, 5, 5, 5, 5)
_SMALL_PROBLEM = 1 << 17
# Barycentric slack of the inside test, so pixel centres exactly on a shared edge are never
# lost to rounding by both neighbours (the z-test then picks one).
_INSIDE_TOL = 1e-6
# Faces with a smaller doubled screen area (in pixels^2) are skipped as degenerate.
_MIN_AREA2 = 1e-10
_DEFAULT_EPS = 1e-8

FaceFeatures = Tensor | Sequence[Tensor]


# --------------------------------------------------------------------------- validation
def _check_size(height: int, width: int) -> None:
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r}, {width!r}")


def _check_image(face_vertices_image: Tensor) -> tuple[int, int]:
    if face_vertices_image.ndim != 4 or face_vertices_image.shape[-2:] != (3, 2):
        raise ValueError(
            f"face_vertices_image must be (B, F, 3, 2), got {tuple(face_vertices_image.shape)}"
        )
    return int(face_vertices_image.shape[0]), int(face_vertices_image.shape[1])


def _check_z(face_vertices_z: Tensor, b: int, f: int) -> None:
    if face_vertices_z.shape != (b, f, 3):
        raise ValueError(
            f"face_vertices_z must be (B, F, 3) = {(b, f, 3)} to match face_vertices_image, "
            f"got {tuple(face_vertices_z.shape)}"
        )


def _check_valid_faces(valid_faces: Tensor | None, b: int, f: int) -> None:
    if valid_faces is not None and (valid_faces.shape != (b, f) or valid_faces.dtype != torch.bool):
        raise ValueError(
            f"valid_faces must be a (B, F) = {(b, f)} bool tensor, "
            f"got {tuple(valid_faces.shape)} {valid_faces.dtype}"
        )


def _valid_mask(
    b: int, f: int, face_vertices_z: Tensor | None, valid_faces: Tensor | None, device
) -> Tensor:
    """(B*F,) faces to draw: the user's mask and all corners in front of the camera."""
    valid = torch.ones(b, f, dtype=torch.bool, device=device)
    if face_vertices_z is not None:
        valid &= (face_vertices_z < 0).all(-1)
    if valid_faces is not None:
        valid &= valid_faces
    return valid.reshape(-1)


# --------------------------------------------------------------------------- index pass
def _screen_corners(face_vertices_image: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """(B, F, 3, 2) NDC corners -> pixel coordinates (column px, row py), each (3, B*F).

    Pixel centres sit at k + 0.5. Corner-major rows keep every later op on contiguous memory.
    """
    k = face_vertices_image.shape[0] * face_vertices_image.shape[1]
    pts = face_vertices_image.reshape(k, 6).t().contiguous()  # rows x0 y0 x1 y1 x2 y2
    return (pts[0::2] + 1.0) * (width / 2), (1.0 - pts[1::2]) * (height / 2)


def _pixel_bboxes(
    px: Tensor, py: Tensor, valid: Tensor, height: int, width: int, margin: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Range of pixel centres within each face's bounding box grown by ``margin`` pixels.

    Args:
        px, py: (3, K) corner pixel coordinates.
        valid: (K,) faces to keep; others (and faces with non-finite corners) get no pixel.

    Returns:
        c0, r0: (K,) first column / row; nc, nr: (K,) number of columns / rows (0 if empty).
    """
    lo_x, hi_x = px.amin(0) - margin, px.amax(0) + margin
    lo_y, hi_y = py.amin(0) - margin, py.amax(0) + margin
    valid = valid & torch.isfinite(lo_x + hi_x + lo_y + hi_y)  # NaN/inf corners propagate here
    # Clamp before rounding so far-off corners (huge NDC) cannot overflow the integer cast.
    lo_x, hi_x = lo_x.clamp(-1.0, width + 1.0), hi_x.clamp(-1.0, width + 1.0)
    lo_y, hi_y = lo_y.clamp(-1.0, height + 1.0), hi_y.clamp(-1.0, height + 1.0)
    # Centre k + 0.5 lies in [lo, hi]  <=>  ceil(lo - 0.5) <= k <= floor(hi - 0.5).
    c0 = torch.ceil(lo_x - 0.5).long().clamp(0, width)
    c1 = torch.floor(hi_x - 0.5).long().clamp(-1, width - 1)
    r0 = torch.ceil(lo_y - 0.5).long().clamp(0, height)
    r1 = torch.floor(hi_y - 0.5).long().clamp(-1, height - 1)
    nc = (c1 - c0 + 1).clamp_min(0) * valid
    nr = (r1 - r0 + 1).clamp_min(0) * valid
    return c0, r0, nc, nr


Tiles = tuple[int, int, Tensor, Tensor, Tensor, Tensor, Tensor]


def _face_tiles(c0: Tensor, r0: Tensor, nc: Tensor, nr: Tensor) -> Iterator[Tiles]:
    """Cover every face's pixel box with rectangular tiles, one tile shape per yielded chunk.

    Each box side n <= 8 gets one tile side, the smallest of 1, 2, 3, 4, 6, 8 that holds it
    (so at most ~1.3x of the candidates are wasted per side); longer sides are cut into 8s.
    Small problems use square tiles of side 1, 2, 4 or 8 instead (fewer chunks).
    Tile pixels beyond the box (``row >= row_end`` or ``col >= col_end``, possibly outside the
    image) must be masked by the caller.

    Yields:
        th, tw (tile height, width), then face, row0, col0, row_end, col_end: (n,) long with
        n * th * tw bounded by :data:`_MAX_CANDIDATES` (unless one tile alone exceeds it).
    """
    active = torch.nonzero(nc * nr).squeeze(1)
    if active.numel() == 0:
        return
    # One (4, K) table so each class needs a single gather: row0, col0, rows, cols.
    boxes = torch.stack([r0, c0, nr, nc]).index_select(1, active)
    n_sides = len(_TILE_SIDES)
    if int((boxes[2] * boxes[3]).sum()) < _SMALL_PROBLEM:
        lut = torch.tensor(_SQUARE_CLASS, device=active.device)
        side = lut[torch.maximum(boxes[2], boxes[3]).clamp_max(8)]
        shape_class = side * (n_sides + 1)
    else:
        lut = torch.tensor(_SIDE_CLASS, device=active.device)
        shape_class = lut[boxes[2].clamp_max(8)] * n_sides + lut[boxes[3].clamp_max(8)]
    shape_class = shape_class.to(torch.uint8)  # a uint8 sort is a fast radix sort
    order = torch.sort(shape_class, stable=True).indices
    counts = torch.bincount(shape_class, minlength=n_sides * n_sides).tolist()
    start = 0
    for cls, count in enumerate(counts):
        if count == 0:
            continue
        members = order[start : start + count]
        start += count
        th, tw = _TILE_SIDES[cls // n_sides], _TILE_SIDES[cls % n_sides]
        face = active.index_select(0, members)
        row0, col0, rows, cols = boxes.index_select(1, members)
        row_end, col_end = row0 + rows, col0 + cols
        if th == 8 or tw == 8:  # sides > 8 need several tiles
            tiles_r, tiles_c = (rows + th - 1) // th, (cols + tw - 1) // tw
            per_face = tiles_r * tiles_c
            total = int(per_face.sum())
            if total > face.numel():
                owner = torch.repeat_interleave(
                    torch.arange(face.numel(), device=face.device), per_face, output_size=total
                )
                local = torch.arange(total, device=face.device)
                local -= (torch.cumsum(per_face, 0) - per_face).index_select(0, owner)
                per_row = tiles_c.index_select(0, owner)
                ti = local // per_row
                expanded = torch.stack([face, row0, col0, row_end, col_end]).index_select(1, owner)
                face, row0, col0, row_end, col_end = expanded
                row0, col0 = row0 + th * ti, col0 + tw * (local - ti * per_row)
        step = max(1, _MAX_CANDIDATES // (th * tw))
        for s in range(0, face.numel(), step):
            sl = slice(s, s + step)
            yield th, tw, face[sl], row0[sl], col0[sl], row_end[sl], col_end[sl]


def _tile_pixels(
    th: int, tw: int, row0: Tensor, col0: Tensor, row_end: Tensor, col_end: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows (th, n) and cols (tw, n) of each tile, and which of them lie inside the box.

    Tiles run along the *last* axis so every broadcast (th, 1, n) + (1, tw, n) has a long
    contiguous inner loop (tiny inner dims make CPU elementwise kernels several times slower).
    """
    rows = row0 + torch.arange(th, device=row0.device)[:, None]
    cols = col0 + torch.arange(tw, device=col0.device)[:, None]
    return rows, cols, rows < row_end, cols < col_end


@torch.no_grad()
def _nearest_faces(
    height: int, width: int, face_vertices_z: Tensor, face_vertices_image: Tensor, valid: Tensor
) -> Tensor:
    """Hard z-buffer: (B, H, W) long index of the nearest covering face, -1 where none.

    Args:
        face_vertices_z: (B, F, 3); face_vertices_image: (B, F, 3, 2); valid: (B*F,) bool.
    """
    b, f = face_vertices_z.shape[:2]
    hw = height * width
    px, py = _screen_corners(face_vertices_image, height, width)
    dtype = px.dtype
    # Per-face affine maps, once for all faces: with (dx, dy) = pixel centre - corner 0,
    # u (corner 1) = ux dx + uy dy, v (corner 2) = vx dx + vy dy, 1/|z| = w0 + kx dx + ky dy.
    x0, y0 = px[0], py[0]
    ax, ay, bx, by = px[1] - x0, py[1] - y0, px[2] - x0, py[2] - y0
    area2 = ax * by - bx * ay
    valid = valid & (area2.abs() > _MIN_AREA2)  # degenerate faces cover nothing
    inv = 1.0 / torch.where(valid, area2, torch.ones_like(area2))
    ux, uy, vx, vy = by * inv, -bx * inv, -ay * inv, ax * inv
    w = (-1.0 / face_vertices_z.reshape(b * f, 3)).t().to(dtype)  # 1/|z| > 0 in front
    kx, ky = ux * (w[1] - w[0]) + vx * (w[2] - w[0]), uy * (w[1] - w[0]) + vy * (w[2] - w[0])
    coeffs = torch.stack([x0 - 0.5, y0 - 0.5, ux, uy, vx, vy, w[0], kx, ky])  # (9, K)
    face_ids = torch.arange(b * f, device=px.device)
    ids = torch.stack([face_ids % f + 1, face_ids // f * hw])  # key low bits, pixel offset
    keys = torch.zeros(b * hw, dtype=torch.long, device=px.device)  # 0 = empty
    nan = float("nan")
    for th, tw, face, row0, col0, row_end, col_end in _face_tiles(
        *_pixel_bboxes(px, py, valid, height, width)
    ):
        cx0, cy0, ux, uy, vx, vy, w0, kx, ky = coeffs.index_select(1, face)
        low, base = ids.index_select(1, face)
        rows, cols, row_in, col_in = _tile_pixels(th, tw, row0, col0, row_end, col_end)
        # NaN marks tile pixels outside the box: they then fail every inside test for free.
        dx = torch.where(col_in, cols.to(dtype) - cx0, nan)  # (tw, n)
        dy = torch.where(row_in, rows.to(dtype) - cy0, nan)  # (th, n)
        # Column part (1, tw, n) plus row part (th, 1, n): one full-size op per quantity.
        u = (ux * dx).unsqueeze(0) + (uy * dy).unsqueeze(1)  # (th, tw, n)
        v = (vx * dx).unsqueeze(0) + (vy * dy).unsqueeze(1)
        inv_d = (w0 + kx * dx).unsqueeze(0) + (ky * dy).unsqueeze(1)
        inside = (u >= -_INSIDE_TOL) & (v >= -_INSIDE_TOL) & (u + v <= 1.0 + _INSIDE_TOL)
        # Non-negative float32 bit patterns order like the floats: depth above the face id.
        bits = inv_d.float().clamp_min(0.0).view(torch.int32).long()
        key = ((bits << 32) | low) * inside
        # Masked candidates add key 0 (a no-op for amax); clamping keeps their index in range.
        pixel = (base + rows.clamp_max(height - 1) * width).unsqueeze(1)
        pixel = pixel + cols.clamp_max(width - 1).unsqueeze(0)
        keys.scatter_reduce_(0, pixel.reshape(-1), key.reshape(-1), reduce="amax")
    return ((keys & 0xFFFFFFFF) - 1).view(b, height, width)


# --------------------------------------------------------------------------- differentiable pass
def _cyclic(x: Tensor) -> Tensor:
    """(3, n) -> (5, n) with rows 0 1 2 0 1, so ``x[i + 1]`` / ``x[i + 2]`` (mod 3) over all i
    are the views ``[1:4]`` / ``[2:5]`` (cheaper than two rolls)."""
    return torch.cat([x, x[:2]])


def _persp_weights(
    g: Tensor, centre: Tensor, height: int, width: int, eps: float
) -> tuple[Tensor, ...]:
    """Geometry of perspective-correct interpolation for one chunk.

    Args:
        g: (9, n) rows ``x0 y0 x1 y1 x2 y2 z0 z1 z2`` (NDC xy, camera z) of each pair's face.
        centre: (2, n) pixel centre (column, row) in pixels.

    Returns:
        rx, ry (5, n) cyclic (see :func:`_cyclic`) corner minus pixel centre, in pixels;
        inv_depth (3, n) = 1 / (-z); inv_area (n,); bary (3, n) screen barycentrics;
        persp (3, n) = bary / depth; inv_total (n,) = 1 / sum(persp);
        weights (3, n) = persp / sum(persp).
    """
    rx = _cyclic((g[0:6:2] + 1.0) * (width / 2) - centre[0])
    ry = _cyclic((1.0 - g[1:6:2]) * (height / 2) - centre[1])
    inv_depth = -1.0 / g[6:9]
    # Edge functions E_i = cross(r_{i+1}, r_{i+2}); b_i = E_i / sum(E).
    edge = rx[1:4] * ry[2:5] - ry[1:4] * rx[2:5]
    area = edge.sum(0)
    inv_area = 1.0 / torch.where(area >= 0, area.clamp_min(eps), area.clamp_max(-eps))
    bary = edge * inv_area
    persp = bary * inv_depth
    inv_total = 1.0 / persp.sum(0).clamp_min(eps)
    return rx, ry, inv_depth, inv_area, bary, persp, inv_total, persp * inv_total


class _PerspectiveInterpolation(torch.autograd.Function):
    """Perspective-correct barycentric interpolation at given (face, pixel) pairs.

    Forward inputs: corners (9, K) rows ``x0 y0 x1 y1 x2 y2 z0 z1 z2`` (NDC xy, camera z),
    features (3, D, K) (corner, channel, face), face (N,) and pixel (N,) long (pixel indexes
    the flat B*H*W image), centre (2, N) pixel centres (column, row) in pixels, number of
    pixels P = B*H*W, image height/width, eps.
    Output: (D, P), zero off the pairs. Faces run along the last axis everywhere so that
    elementwise kernels get long contiguous inner loops.

    Screen barycentrics ``b_i = E_i / A`` use edge functions of the corners relative to the
    pixel centre; perspective weights ``w_i = (b_i / d_i) / sum_j (b_j / d_j)`` with d = -z.
    The backward is the chain rule of exactly these formulas (eps clamps taken as constants),
    recomputed chunk by chunk instead of storing (N, ...) intermediates.
    """

    @staticmethod
    def forward(
        ctx: Any,
        corners: Tensor,
        features: Tensor,
        face: Tensor,
        pixel: Tensor,
        centre: Tensor,
        num_pixels: int,
        height: int,
        width: int,
        eps: float,
    ) -> Tensor:
        out = features.new_zeros(features.shape[1], num_pixels)
        centre = centre.to(corners.dtype)
        for s in range(0, face.numel(), _INTERP_CHUNK):
            fc, pc = face[s : s + _INTERP_CHUNK], pixel[s : s + _INTERP_CHUNK]
            w = _persp_weights(
                corners.index_select(1, fc), centre[:, s : s + _INTERP_CHUNK], height, width, eps
            )[-1]
            # 2-D gathers along the last axis are far faster than 3-D ones on CPU.
            feats = features.view(-1, features.shape[2]).index_select(1, fc)
            feats = feats.view(3, -1, fc.numel())  # (3, D, n)
            out.index_copy_(1, pc, (feats * w.to(feats.dtype).unsqueeze(1)).sum(0))
        ctx.save_for_backward(corners, features, face, pixel, centre)
        ctx.config = (height, width, eps)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        corners, features, face, pixel, centre = ctx.saved_tensors
        grad_out = grad_out.contiguous()  # arrives transposed; gathers need it contiguous
        height, width, eps = ctx.config
        need_corners, need_features = ctx.needs_input_grad[:2]
        k = corners.shape[1]
        grad_corners = torch.zeros_like(corners) if need_corners else None
        grad_features = torch.zeros_like(features) if need_features else None
        for s in range(0, face.numel(), _INTERP_CHUNK):
            fc, pc = face[s : s + _INTERP_CHUNK], pixel[s : s + _INTERP_CHUNK]
            rx, ry, inv_depth, inv_area, bary, persp, inv_total, w = _persp_weights(
                corners.index_select(1, fc), centre[:, s : s + _INTERP_CHUNK], height, width, eps
            )
            grad_vals = grad_out.index_select(1, pc).unsqueeze(0)  # (1, D, n)
            if grad_features is not None:
                gf = w.to(grad_vals.dtype).unsqueeze(1) * grad_vals  # (3, D, n)
                grad_features.view(-1, k).index_add_(1, fc, gf.view(-1, fc.numel()))
            if grad_corners is None:
                continue
            feats = features.view(-1, k).index_select(1, fc).view(3, -1, fc.numel())
            gw = (feats * grad_vals).sum(1).to(w.dtype)  # (3, n)
            gp = (gw - (gw * w).sum(0)) * inv_total  # through w_i = p_i / sum(p)
            gb = gp * inv_depth  # p_i = b_i / d_i
            gz = gp * persp * inv_depth  # dp_i/dz_i = p_i / d_i since d = -z
            h = (gb - (gb * bary).sum(0)) * inv_area  # through b_i = E_i / sum(E)
            # dE_i/dP_j is the 90-degree rotation of another corner's offset r = P - q, so
            # dL/dP_j = rot(h_{j+2} r_{j+1} - h_{j+1} r_{j+2}) with rot(a) = (a_y, -a_x).
            hc = _cyclic(h)
            h1, h2 = hc[1:4], hc[2:5]
            gx = h2 * ry[1:4] - h1 * ry[2:5]
            gy = h1 * rx[2:5] - h2 * rx[1:4]
            # Pixel -> NDC: X = (x + 1) W / 2, Y = (1 - y) H / 2.
            rows = torch.stack([gx * (width / 2), gy * (-height / 2)], 1).reshape(6, -1)
            grad_corners.index_add_(1, fc, torch.cat([rows, gz]))
        return grad_corners, grad_features, None, None, None, None, None, None, None


def _interpolate(
    face_idx: Tensor,
    face_vertices_z: Tensor,
    face_vertices_image: Tensor,
    features: list[Tensor],
    eps: float,
) -> list[Tensor]:
    """Interpolate each (B, F, 3, D_i) feature at the winners of ``face_idx`` (B, H, W)."""
    b, h, w = face_idx.shape
    f = face_vertices_image.shape[1]
    k = b * f
    # nonzero gives (batch, row, col) directly, sparing int64 divisions later.
    bi, row, col = torch.nonzero(face_idx >= 0).unbind(1)
    pixel = (bi * h + row) * w + col
    face = bi * f + face_idx[bi, row, col]
    centre = torch.stack([col, row]).to(face_vertices_image.dtype) + 0.5
    dtype = torch.promote_types(face_vertices_image.dtype, face_vertices_z.dtype)
    # Faces along the last axis (see _PerspectiveInterpolation); cat of transposed views writes
    # the (9, K) / (3, D, K) layouts in one pass.
    corners = torch.cat(
        [
            face_vertices_image.reshape(k, 6).t().to(dtype),
            face_vertices_z.reshape(k, 3).t().to(dtype),
        ]
    )
    dims = [feat.shape[-1] for feat in features]
    parts = [feat.reshape(k, 3, d).permute(1, 2, 0) for feat, d in zip(features, dims, strict=True)]
    packed = torch.cat(parts, 1)
    image = _PerspectiveInterpolation.apply(
        corners, packed, face, pixel, centre, b * h * w, h, w, eps
    )
    image = image.t().reshape(b, h, w, sum(dims))
    return [part.to(feat.dtype) for part, feat in zip(image.split(dims, -1), features, strict=True)]


# --------------------------------------------------------------------------- public API
def rasterize(
    height: int,
    width: int,
    face_vertices_z: Tensor,
    face_vertices_image: Tensor,
    face_features: FaceFeatures,
    valid_faces: Tensor | None = None,
    multiplier: int | None = None,
    eps: float | None = None,
    backend: Backend = "auto",
) -> tuple[Tensor | list[Tensor] | tuple[Tensor, ...], Tensor]:
    """Hard z-buffered rasterization with differentiable perspective-correct interpolation.

    Same inputs and outputs as ``kaolin.render.mesh.rasterize``. Each pixel centre takes the
    covering face nearest the camera (largest z); both windings are drawn (no culling). Faces
    with any corner at z >= 0 (behind the camera), zero screen area, non-finite coordinates or
    ``valid_faces`` False are skipped. Faces larger than the image are fine (their box is clipped).

    Args:
        height, width: image size in pixels.
        face_vertices_z: (B, F, 3) camera-space z of the corners (negative in front).
        face_vertices_image: (B, F, 3, 2) NDC xy of the corners (x right, y up, image in
            [-1, 1]).
        face_features: (B, F, 3, D) per-corner features, or a list/tuple of such tensors
            (different D allowed; interpolated with shared weights).
        valid_faces: optional (B, F) bool mask of faces to draw.
        multiplier: accepted for Kaolin compatibility; unused by the torch backend (Kaolin's CUDA
            kernel scales coordinates by it, default 1000, to dodge float error; we instead work
            in pixel units relative to a corner of each face).
        eps: guards the barycentric normalisation (the signed area, in pixels^2, and the sum of
            ``bary / depth`` are kept at least ``eps`` away from 0); default 1e-8.
        backend: ``"auto"``, ``"torch"`` or ``"kaolin"`` (see
            :func:`dreamreward.render.backend.resolve_backend`); Kaolin gets the same arguments
            and runs its own default kernel.

    Returns:
        interpolated_features: (B, H, W, D), or a list/tuple matching ``face_features``; zero
            where no face. Differentiable w.r.t. features, image coordinates and z.
        face_idx: (B, H, W) long index into F, -1 where no face.

    Note:
        Kaolin's CUDA kernel interpolates with screen-space (not perspective-corrected)
        barycentrics and gives no gradient w.r.t. z, so its features differ slightly from ours
        inside large, steeply tilted faces.

    Raises:
        ValueError: wrong shapes / mismatched B or F / non-positive size.
        RuntimeError: ``backend="kaolin"`` without Kaolin or without CUDA tensors.
    """
    is_seq = isinstance(face_features, (list, tuple))
    features = list(face_features) if is_seq else [face_features]
    _check_size(height, width)
    b, f = _check_image(face_vertices_image)
    _check_z(face_vertices_z, b, f)
    if not features:
        raise ValueError("face_features must hold at least one tensor")
    for i, feat in enumerate(features):
        if not isinstance(feat, Tensor) or feat.ndim != 4 or feat.shape[:3] != (b, f, 3):
            shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
            name = f"face_features[{i}]" if is_seq else "face_features"
            raise ValueError(f"{name} must be (B, F, 3, D) with (B, F) = {(b, f)}, got {shape}")
    _check_valid_faces(valid_faces, b, f)
    if resolve_backend(backend, face_vertices_image.device) == "kaolin":
        kaolin = import_kaolin()
        feats, face_idx = kaolin.render.mesh.rasterize(
            height,
            width,
            face_vertices_z,
            face_vertices_image,
            face_features,
            valid_faces=valid_faces,
            multiplier=multiplier,
            eps=eps,
        )
        return (type(face_features)(feats) if is_seq else feats), face_idx
    eps = _DEFAULT_EPS if eps is None else float(eps)
    valid = _valid_mask(b, f, face_vertices_z, valid_faces, face_vertices_z.device)
    face_idx = _nearest_faces(
        height, width, face_vertices_z.detach(), face_vertices_image.detach(), valid
    )
    images = _interpolate(face_idx, face_vertices_z, face_vertices_image, features, eps)
    return (type(face_features)(images) if is_seq else images[0]), face_idx


# --------------------------------------------------------------------------- soft silhouette
def _segment_dist2(
    qx: Tensor, qy: Tensor, ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor
) -> Tensor:
    """Squared distances from points q to segments [a, b], all (N,) (differentiable)."""
    ex, ey = bx - ax, by - ay
    s = ((qx - ax) * ex + (qy - ay) * ey) / (ex * ex + ey * ey).clamp_min(1e-12)
    s = s.clamp(0.0, 1.0)
    dx, dy = qx - ax - s * ex, qy - ay - s * ey
    return dx * dx + dy * dy


@torch.no_grad()
def _silhouette_pairs(
    px: Tensor,
    py: Tensor,
    boxes: tuple[Tensor, Tensor, Tensor, Tensor],
    covered: Tensor,
    f: int,
    height: int,
    width: int,
    radius: float,
    nearest_only: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(face, pixel, nearest edge) for uncovered pixel centres closer than ``radius`` to a face.

    Args:
        px, py: (3, K) corners in pixels; boxes: (c0, r0, nc, nr) grown pixel boxes;
        covered: (B*H*W,) bool; nearest_only: keep only each pixel's nearest face.

    Returns:
        face (M,), pixel (M,) flat index into (B*H*W), edge (M,) in {0, 1, 2} (edge i joins
        corners i and i + 1).
    """
    table = torch.cat([px, py])
    hw, r2 = height * width, radius * radius
    parts: list[tuple[Tensor, Tensor]] = []
    for th, tw, face, row0, col0, row_end, col_end in _face_tiles(*boxes):
        rows, cols, row_in, col_in = _tile_pixels(th, tw, row0, col0, row_end, col_end)
        base = (face // f) * hw
        pixel = (base + rows.clamp_max(height - 1) * width).unsqueeze(1)
        pixel = pixel + cols.clamp_max(width - 1).unsqueeze(0)  # (th, tw, n)
        # Most candidates of a grown box are covered pixels: drop them before any geometry.
        free = ~covered[pixel] & row_in.unsqueeze(1) & col_in.unsqueeze(0)
        i, j, tile = torch.nonzero(free).unbind(1)
        parts.append((face.index_select(0, tile), pixel[i, j, tile]))
    if not parts:
        empty = torch.zeros(0, dtype=torch.long, device=px.device)
        return empty, empty, empty
    face, pixel = (torch.cat(p) for p in zip(*parts, strict=True))
    local = pixel % hw
    qx, qy = (local % width).to(px.dtype) + 0.5, (local // width).to(px.dtype) + 0.5
    x0, x1, x2, y0, y1, y2 = table.index_select(1, face)
    d2, edge = torch.stack(
        [
            _segment_dist2(qx, qy, x0, y0, x1, y1),
            _segment_dist2(qx, qy, x1, y1, x2, y2),
            _segment_dist2(qx, qy, x2, y2, x0, y0),
        ]
    ).min(0)
    keep = d2 < r2
    if nearest_only:  # max-aggregation: only each pixel's nearest face matters
        best = torch.full((covered.numel(),), math.inf, dtype=d2.dtype, device=d2.device)
        best.scatter_reduce_(0, pixel, d2, reduce="amin")
        keep &= d2 <= best[pixel]
    keep = torch.nonzero(keep).squeeze(1)
    return face[keep], pixel[keep], edge[keep]


def soft_silhouette(
    face_vertices_image: Tensor,
    height: int,
    width: int,
    sigma: float = 1.0,
    valid_faces: Tensor | None = None,
    face_vertices_z: Tensor | None = None,
    aggregate: str = "max",
    threshold: float = 1e-2,
) -> Tensor:
    """Anti-aliased silhouette whose gradient moves vertices at silhouette edges (SoftRas-like).

    A pixel whose centre is inside any face has coverage exactly 1 (and no gradient). Outside,
    face f contributes ``D_f = (exp(-d_f^2 / sigma) - threshold) / (1 - threshold)`` for
    ``d_f < r = sqrt(sigma * ln(1 / threshold))`` and 0 beyond, with ``d_f`` the distance in
    pixels from the pixel centre to the triangle (continuous at the edge, where D = 1, and at
    r, where D = 0). Faces combine as ``max_f D_f`` (``aggregate="max"``, default: a pure
    falloff with the distance to the silhouette, independent of how finely the mesh is
    tessellated; the gradient goes to the nearest face) or ``1 - prod_f (1 - D_f)``
    (``"prod"``, SoftRas' probabilistic union: every face within r counts, so dense meshes get
    a wider, darker fringe, and it costs more).

    Only uncovered pixels within r of a face are evaluated, and only for faces whose grown box
    holds one (an integral-image test), so interior faces of a closed mesh cost nothing.

    Args:
        face_vertices_image: (B, F, 3, 2) NDC corners.
        height, width: image size.
        sigma: falloff scale in squared pixels (1.0: coverage ~0.36 one pixel out, 0 beyond
            r = 2.15 px). Raise it to reach targets farther away (cost grows with r^2).
        valid_faces: optional (B, F) bool mask.
        face_vertices_z: optional (B, F, 3) camera z; faces with a corner at z >= 0 are skipped.
        aggregate: ``"max"`` or ``"prod"``.
        threshold: coverage below which the falloff is cut (sets r; 1e-2 halves the work of
            1e-4 for a negligible change of the image).

    Returns:
        (B, H, W) coverage in [0, 1], differentiable w.r.t. ``face_vertices_image``.
    """
    _check_size(height, width)
    b, f = _check_image(face_vertices_image)
    if face_vertices_z is not None:
        _check_z(face_vertices_z, b, f)
    _check_valid_faces(valid_faces, b, f)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if aggregate not in ("max", "prod"):
        raise ValueError(f"aggregate must be 'max' or 'prod', got {aggregate!r}")

    device, hw = face_vertices_image.device, height * width
    valid = _valid_mask(b, f, face_vertices_z, valid_faces, device)
    image = face_vertices_image.detach()
    unit_z = torch.full((b, f, 3), -1.0, dtype=image.dtype, device=device)
    covered = (_nearest_faces(height, width, unit_z, image, valid) >= 0).view(-1)
    px, py = _screen_corners(face_vertices_image, height, width)  # (3, K), differentiable
    radius = math.sqrt(sigma * math.log(1.0 / threshold))

    with torch.no_grad():
        c0, r0, nc, nr = _pixel_bboxes(px, py, valid, height, width, radius)
        # Integral image of uncovered pixels: keep a face only if its grown box holds one.
        free = (~covered).view(b, height, width).to(torch.int32)
        integral = F.pad(free.cumsum(1).cumsum(2), (1, 0, 1, 0)).view(-1)  # (B*(H+1)*(W+1))
        base = (torch.arange(b * f, device=device) // f) * ((height + 1) * (width + 1))
        r1, c1 = r0 + nr, c0 + nc

        def at(r: Tensor, c: Tensor) -> Tensor:
            return integral[base + r * (width + 1) + c]

        keep = (at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)) > 0
        face, pixel, edge = _silhouette_pairs(
            px.detach(),
            py.detach(),
            (c0, r0, nc * keep, nr * keep),
            covered,
            f,
            height,
            width,
            radius,
            nearest_only=aggregate == "max",
        )

    # Differentiable distance to each pair's nearest edge (the min's gradient goes there).
    dtype = px.dtype
    local = pixel % hw
    qx, qy = (local % width).to(dtype) + 0.5, (local // width).to(dtype) + 0.5
    gx, gy = px.index_select(1, face), py.index_select(1, face)  # (3, M)
    a, b_ = edge.unsqueeze(0), ((edge + 1) % 3).unsqueeze(0)
    d2 = _segment_dist2(
        qx, qy, gx.gather(0, a)[0], gy.gather(0, a)[0], gx.gather(0, b_)[0], gy.gather(0, b_)[0]
    )
    coverage = (torch.exp(-d2 / sigma) - threshold) / (1.0 - threshold)
    if aggregate == "prod":
        # Sum of log(1 - D) per pixel; D -> 1 only at distance 0: clamped to stay finite.
        logs = torch.log1p(-coverage.clamp(0.0, 1.0 - 1e-6))
        soft = -torch.expm1(
            torch.zeros(b * hw, dtype=dtype, device=device).index_add(0, pixel, logs)
        )
    else:
        soft = torch.zeros(b * hw, dtype=dtype, device=device).scatter_reduce(
            0, pixel, coverage, reduce="amax", include_self=True
        )
    return (covered.to(dtype) + soft).view(b, height, width)


def render_mesh(
    mesh: Mesh,
    cameras: Cameras,
    vertex_features: Tensor | None = None,
    soft_sigma: float | None = None,
    backend: Backend = "auto",
) -> dict[str, Tensor]:
    """Rasterize one mesh from N cameras.

    Faces with a corner closer than ``cameras.near`` (or behind the camera) are dropped whole
    (no near-plane clipping). Interpolation is perspective-correct (torch backend).

    Args:
        mesh: the mesh (V vertices, F faces).
        cameras: N cameras, all of size ``cameras.height`` x ``cameras.width``.
        vertex_features: (V, D) or (N, V, D) per-vertex features; default the mesh's vertex
            colours, else white (1, 1, 1).
        soft_sigma: if given, ``"alpha"`` is :func:`soft_silhouette` with this sigma (squared
            pixels), which gives silhouette gradients; otherwise alpha is the hard mask.
        backend: rasterizer backend, see :func:`rasterize`.

    Returns:
        dict with
        - ``"features"``: (N, H, W, D), 0 where empty (composite a background yourself),
        - ``"mask"``: (N, H, W, 1) hard coverage in {0, 1} (no gradient),
        - ``"alpha"``: (N, H, W, 1) soft coverage if ``soft_sigma`` else ``mask``,
        - ``"depth"``: (N, H, W, 1) distance along the camera's -Z, 0 where empty,
        - ``"normal"``: (N, H, W, 3) unit world-space interpolated vertex normals, 0 where empty,
        - ``"face_idx"``: (N, H, W) long, -1 where empty.
    """
    n, h, w = len(cameras), cameras.height, cameras.width
    faces = mesh.faces.long()
    verts = mesh.vertices
    if vertex_features is None:
        vertex_features = (
            mesh.vertex_colors if mesh.vertex_colors is not None else torch.ones_like(verts)
        )
    if vertex_features.ndim == 2:
        vertex_features = vertex_features.unsqueeze(0).expand(n, -1, -1)
    if vertex_features.ndim != 3 or vertex_features.shape[:2] != (n, mesh.num_vertices):
        raise ValueError(
            f"vertex_features must be (V, D) or (N, V, D) with N={n}, V={mesh.num_vertices}, "
            f"got {tuple(vertex_features.shape)}"
        )
    cam_points = cameras.world_to_camera(verts)  # (N, V, 3)
    ndc = cameras.project(cam_points)  # (N, V, 2)
    face_z = cam_points[..., 2][:, faces]  # (N, F, 3)
    face_image = ndc[:, faces]  # (N, F, 3, 2)
    valid = (face_z < -cameras.near).all(-1)
    normals = vertex_normals(verts, faces)[faces].unsqueeze(0).expand(n, -1, -1, -1)
    (feat_img, normal_img, z_img), face_idx = rasterize(
        h,
        w,
        face_z,
        face_image,
        [vertex_features[:, faces], normals, face_z.unsqueeze(-1)],
        valid_faces=valid,
        backend=backend,
    )
    mask = (face_idx >= 0).unsqueeze(-1).to(feat_img.dtype)
    if soft_sigma is not None:
        alpha = soft_silhouette(face_image, h, w, sigma=soft_sigma, valid_faces=valid)
        alpha = alpha.unsqueeze(-1)
    else:
        alpha = mask
    return {
        "features": feat_img,
        "mask": mask,
        "alpha": alpha,
        "depth": -z_img * mask,
        "normal": F.normalize(normal_img, dim=-1) * mask,
        "face_idx": face_idx,
    }
