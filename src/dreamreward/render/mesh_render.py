"""One call from a mesh and N cameras to images.

- :func:`project_faces`: the projection every mesh renderer starts with (camera space, NDC,
  faces in front of the near plane).
- :func:`render_mesh`: feature, mask, depth and normal images (no background, no filtering).
- :func:`render_mesh_antialiased`: the asset as training and data see it: vertex colours
  rendered at ``supersample`` times the size, composited over a background and box filtered.
  The world's shaded renderer (:mod:`dreamreward.world.views`) shares the projection and the
  filter but shades with its own light.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.render.backend import Backend
from dreamreward.render.background import Background
from dreamreward.render.cameras import Cameras
from dreamreward.render.image_ops import box_downsample
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_ops import vertex_normals
from dreamreward.render.rasterizer import rasterize
from dreamreward.render.rays import generate_pinhole_rays
from dreamreward.render.soft_silhouette import soft_silhouette


def project_faces(mesh: Mesh, cameras: Cameras) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The mesh seen from N cameras, per face corner.

    Returns:
        cam_points (N, V, 3) vertices in camera space; face_z (N, F, 3) their camera z per face
        corner; face_image (N, F, 3, 2) NDC corners; valid (N, F): faces with every corner in
        front of ``cameras.near`` (others are dropped whole: no near-plane clipping).
    """
    faces = mesh.faces.long()
    cam_points = cameras.world_to_camera(mesh.vertices)  # (N, V, 3)
    face_z = cam_points[..., 2][:, faces]  # (N, F, 3)
    face_image = cameras.project(cam_points)[:, faces]  # (N, F, 3, 2)
    valid = (face_z < -cameras.near).all(-1)
    return cam_points, face_z, face_image, valid


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
    _, face_z, face_image, valid = project_faces(mesh, cameras)
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


def render_mesh_antialiased(
    mesh: Mesh,
    cameras: Cameras,
    background: Background | float = 1.0,
    supersample: int = 1,
    soft_sigma: float | None = None,
) -> dict[str, Tensor]:
    """The mesh's vertex colours over a background, supersampled and box filtered.

    Args:
        mesh: the mesh; colours from ``mesh.vertex_colors`` (else white).
        cameras: N cameras of size H x W.
        background: a :class:`~dreamreward.render.background.Background` (it gets the fine
            pixels' view directions) or a grey level.
        supersample: render at this factor and box-filter down (1 = aliased).
        soft_sigma: if given, ``"alpha"`` is the soft silhouette with this sigma in squared
            output pixels (scaled to the fine grid), which gives silhouette gradients.

    Returns:
        dict with ``"rgb"`` (N, H, W, 3) composited, ``"alpha"`` (N, H, W, 1) (soft if
        ``soft_sigma``) and ``"mask"`` (N, H, W, 1) antialiased coverage.
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    ss = supersample
    fine = cameras.with_resolution(cameras.width * ss, cameras.height * ss)
    out = render_mesh(
        mesh,
        fine,
        vertex_features=mesh.vertex_colors,
        soft_sigma=soft_sigma * ss * ss if soft_sigma is not None else None,
    )
    mask = out["mask"].float()
    if isinstance(background, Background):
        _, directions = generate_pinhole_rays(fine)  # a learned background needs view rays
        behind: Tensor | float = background(directions.to(mask))
    else:
        behind = float(background)
    images = {
        "rgb": out["features"] * mask + behind * (1 - mask),
        "alpha": out["alpha"],
        "mask": mask,
    }
    return {k: box_downsample(v, ss) for k, v in images.items()}
