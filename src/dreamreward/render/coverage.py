"""Which pixels each triangle covers: screen-space tiling and the hard z-buffer.

The index pass (no autograd) shared by :func:`~dreamreward.render.rasterizer.rasterize` and
:func:`~dreamreward.render.soft_silhouette.soft_silhouette`, with the argument checks both
apply. Each face's pixel bounding box (clipped to the image) is covered by rectangular tiles
(sides 1, 2, 3, 4, 6 or 8 px), grouped by tile shape, so a whole group is one broadcast
(th, tw, n) computation with no per-pixel gathers: barycentrics and the inverse depth ``1/|z|``
are affine in screen space, evaluated as a column part plus a row part. Covered candidates pack
``(float32 bits of 1/|z|) << 32 | (face + 1)`` into one int64, and ``scatter_reduce(amax)``
keeps the nearest face per pixel (ties: the larger face index).

Conventions as in :mod:`dreamreward.render.rasterizer`. Work is chunked
(:data:`_MAX_CANDIDATES` pixel candidates at a time) so memory stays bounded and each step
stays in cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

# Pixel candidates per chunk: small enough to stay in cache (elementwise ops run ~4x faster
# there on CPU), large enough to amortise Python overhead.
_MAX_CANDIDATES = 1 << 16
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


# --------------------------------------------------------------------------- validation
def check_size(height: int, width: int) -> None:
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"height and width must be positive ints, got {height!r}, {width!r}")


def check_image(face_vertices_image: Tensor) -> tuple[int, int]:
    if face_vertices_image.ndim != 4 or face_vertices_image.shape[-2:] != (3, 2):
        raise ValueError(
            f"face_vertices_image must be (B, F, 3, 2), got {tuple(face_vertices_image.shape)}"
        )
    return int(face_vertices_image.shape[0]), int(face_vertices_image.shape[1])


def check_z(face_vertices_z: Tensor, b: int, f: int) -> None:
    if face_vertices_z.shape != (b, f, 3):
        raise ValueError(
            f"face_vertices_z must be (B, F, 3) = {(b, f, 3)} to match face_vertices_image, "
            f"got {tuple(face_vertices_z.shape)}"
        )


def check_valid_faces(valid_faces: Tensor | None, b: int, f: int) -> None:
    if valid_faces is not None and (valid_faces.shape != (b, f) or valid_faces.dtype != torch.bool):
        raise ValueError(
            f"valid_faces must be a (B, F) = {(b, f)} bool tensor, "
            f"got {tuple(valid_faces.shape)} {valid_faces.dtype}"
        )


def valid_face_mask(
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
def screen_corners(face_vertices_image: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """(B, F, 3, 2) NDC corners -> pixel coordinates (column px, row py), each (3, B*F).

    Pixel centres sit at k + 0.5. Corner-major rows keep every later op on contiguous memory.
    """
    k = face_vertices_image.shape[0] * face_vertices_image.shape[1]
    pts = face_vertices_image.reshape(k, 6).t().contiguous()  # rows x0 y0 x1 y1 x2 y2
    return (pts[0::2] + 1.0) * (width / 2), (1.0 - pts[1::2]) * (height / 2)


def pixel_bboxes(
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


def face_tiles(c0: Tensor, r0: Tensor, nc: Tensor, nr: Tensor) -> Iterator[Tiles]:
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


def tile_pixels(
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
def nearest_faces(
    height: int, width: int, face_vertices_z: Tensor, face_vertices_image: Tensor, valid: Tensor
) -> Tensor:
    """Hard z-buffer: (B, H, W) long index of the nearest covering face, -1 where none.

    Args:
        face_vertices_z: (B, F, 3); face_vertices_image: (B, F, 3, 2); valid: (B*F,) bool.
    """
    b, f = face_vertices_z.shape[:2]
    hw = height * width
    px, py = screen_corners(face_vertices_image, height, width)
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
    for th, tw, face, row0, col0, row_end, col_end in face_tiles(
        *pixel_bboxes(px, py, valid, height, width)
    ):
        cx0, cy0, ux, uy, vx, vy, w0, kx, ky = coeffs.index_select(1, face)
        low, base = ids.index_select(1, face)
        rows, cols, row_in, col_in = tile_pixels(th, tw, row0, col0, row_end, col_end)
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
