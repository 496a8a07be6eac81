"""Differentiable triangle rasterization in pure PyTorch (``kaolin.render.mesh.rasterize``'s
contract).

Conventions (see :mod:`dreamreward.render.cameras` and :func:`~dreamreward.render.rays.
pixel_centers_ndc`): OpenGL camera looking down -Z, so points in front of the camera have
negative camera-space z; NDC x right / y up in [-1, 1]; image row 0 at the top; pixel centres
at +0.5, i.e. pixel (row i, col j) sits at NDC ``x = (2j+1)/W - 1``, ``y = 1 - (2i+1)/H``.

How :func:`rasterize` works (why it is fast on a CPU):

1. *Index pass* (no autograd, :mod:`dreamreward.render.coverage`): tiles over each face's
   pixel box and a packed-integer z-buffer pick the nearest face per pixel.
2. *Differentiable pass*. Only the winners are revisited: gather their corners, recompute
   screen barycentrics, correct them by ``1/z`` (perspective-correct interpolation) and
   interpolate the features, with a hand-written backward (one fused autograd node instead of
   ~100). Gradients reach ``face_vertices_image``, ``face_vertices_z`` and ``face_features``;
   which face wins a pixel is not differentiable, so silhouettes get no gradient here: use
   :func:`~dreamreward.render.soft_silhouette.soft_silhouette` for that.

Both passes work in chunks so memory stays bounded and each step stays in cache; on a
contended CPU, ``torch.set_num_threads(1)`` is often faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from dreamreward.render.backend import Backend, import_kaolin, resolve_backend
from dreamreward.render.coverage import (
    check_image,
    check_size,
    check_valid_faces,
    check_z,
    nearest_faces,
    valid_face_mask,
)

# Covered pixels per chunk of the differentiable pass (small enough to stay in cache).
_INTERP_CHUNK = 1 << 15
_DEFAULT_EPS = 1e-8

FaceFeatures = Tensor | Sequence[Tensor]


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
    check_size(height, width)
    b, f = check_image(face_vertices_image)
    check_z(face_vertices_z, b, f)
    if not features:
        raise ValueError("face_features must hold at least one tensor")
    for i, feat in enumerate(features):
        if not isinstance(feat, Tensor) or feat.ndim != 4 or feat.shape[:3] != (b, f, 3):
            shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
            name = f"face_features[{i}]" if is_seq else "face_features"
            raise ValueError(f"{name} must be (B, F, 3, D) with (B, F) = {(b, f)}, got {shape}")
    check_valid_faces(valid_faces, b, f)
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
    valid = valid_face_mask(b, f, face_vertices_z, valid_faces, face_vertices_z.device)
    face_idx = nearest_faces(
        height, width, face_vertices_z.detach(), face_vertices_image.detach(), valid
    )
    images = _interpolate(face_idx, face_vertices_z, face_vertices_image, features, eps)
    return (type(face_features)(images) if is_seq else images[0]), face_idx
