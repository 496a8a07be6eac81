"""One call from a mesh and N cameras to feature, mask, depth and normal images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.render.backend import Backend
from dreamreward.render.cameras import Cameras
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_ops import vertex_normals
from dreamreward.render.rasterizer import rasterize
from dreamreward.render.soft_silhouette import soft_silhouette


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
