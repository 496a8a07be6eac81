"""Shaded, antialiased 4-view renders of scenes and assets with the project's rasterizer.

Shading is Lambertian, ``colour * (ambient + diffuse * max(0, n . l))``, with the light fixed
relative to the camera (a headlight from the upper left, slightly behind the viewer). Shading
only scales the colour, so every object keeps its hue in every view, and the darkest lit side
keeps ``ambient`` (45%) of its colour: a red cube stays clearly red from the back.

Normals use a crease angle: at each face corner, the normals of the faces around that vertex
within :data:`CREASE_DEG` of the face's own normal are averaged. Spheres, cylinder sides and
tori shade smoothly while cube faces and cylinder caps stay flat, without splitting vertices
(the meshes stay watertight). Normals facing away from the viewer (the inside of an open mesh)
are flipped, so holes show shaded inner walls instead of black.

Antialiasing renders at ``supersample`` times the size and box-filters
(:func:`~dreamreward.render.image_ops.box_downsample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.render.cameras import Cameras, orbit_cameras
from dreamreward.render.image_ops import box_downsample
from dreamreward.render.mesh import Mesh
from dreamreward.render.mesh_render import project_faces
from dreamreward.render.rasterizer import rasterize
from dreamreward.world.scene import Scene

VIEW_AZIMUTHS_DEG: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)  # front, side, back, side
CREASE_DEG = 40.0
# Colour of meshes without vertex colours (a light grey that shows on the white background).
DEFAULT_COLOR = (0.7, 0.7, 0.7)


@dataclass(frozen=True)
class Light:
    """A directional light fixed in camera space plus ambient light.

    Attributes:
        direction: towards the light in camera space (+X right, +Y up, +Z towards the viewer);
            the default comes from the upper left, slightly behind the viewer.
        ambient, diffuse: shading is ``ambient + diffuse * max(0, n . l)``; keep the sum at 1
            so a fully lit surface shows its exact colour.
    """

    direction: tuple[float, float, float] = (-0.5, 0.75, 0.65)
    ambient: float = 0.45
    diffuse: float = 0.55


def default_cameras(
    image_size: int = 64,
    elevation_deg: float = 15.0,
    distance: float = 2.2,
    fovy_deg: float = 45.0,
) -> Cameras:
    """The 4 canonical views at azimuths 0, 90, 180, 270 (front, side, back, side).

    With the defaults a scene of half-diagonal 0.8 (see :mod:`~dreamreward.world.layout`) fits
    the frame (it subtends 21.3 of the 22.5 degrees of half field of view).
    """
    return orbit_cameras(
        elevation_deg, torch.tensor(VIEW_AZIMUTHS_DEG), distance, fovy_deg, image_size
    )


def corner_normals(vertices: Tensor, faces: Tensor, crease_deg: float = CREASE_DEG) -> Tensor:
    """Crease-aware shading normals per face corner.

    Corner (f, k) averages the area-weighted normals of all faces around vertex ``faces[f, k]``
    whose unit normal lies within ``crease_deg`` of face f's (f itself included).

    Args:
        vertices: (V, 3); faces: (F, 3) long.

    Returns:
        (F, 3, 3) unit normals (zero for degenerate faces), indexed [face, corner, xyz].
    """
    faces = faces.long()
    fv = vertices[faces]  # (F, 3, 3)
    area_n = torch.linalg.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0], dim=-1)
    unit_n = F.normalize(area_n, dim=-1)
    corner_vertex = faces.reshape(-1)  # (3F,)
    num_corners = corner_vertex.numel()
    # Group corners by vertex; every corner pairs with every corner of its vertex (incl. itself).
    order = torch.argsort(corner_vertex, stable=True)
    counts = torch.bincount(corner_vertex, minlength=vertices.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    degree = counts[corner_vertex]  # (3F,)
    total = int(degree.sum())
    corner = torch.repeat_interleave(
        torch.arange(num_corners, device=degree.device), degree, output_size=total
    )
    local = torch.arange(total, device=degree.device) - torch.repeat_interleave(
        torch.cumsum(degree, 0) - degree, degree, output_size=total
    )
    partner_face = order[starts[corner_vertex][corner] + local] // 3
    own_face = corner // 3
    cos = (unit_n[own_face] * unit_n[partner_face]).sum(-1)
    keep = cos >= math.cos(math.radians(crease_deg)) - 1e-6
    summed = torch.zeros(num_corners, 3, dtype=vertices.dtype, device=vertices.device).index_add(
        0, corner[keep], area_n[partner_face[keep]]
    )
    return F.normalize(summed, dim=-1).view(-1, 3, 3)


def _downsample_object_index(owner: Tensor, factor: int, num_objects: int) -> Tensor:
    """(N, H*f, W*f) long owner (-1 = background) -> (N, H, W) by vote.

    A pixel belongs to an object when at least half of its sub-samples are covered (so
    ``object_index >= 0`` matches ``mask >= 0.5``); it takes the object owning most of its
    covered sub-samples (ties: the lower index).
    """
    n, hs, ws = owner.shape
    h, w = hs // factor, ws // factor
    votes = F.one_hot(owner + 1, num_objects + 1)  # (N, Hs, Ws, K+1), class 0 = background
    votes = votes.view(n, h, factor, w, factor, -1).sum((2, 4))
    covered = votes[..., 1:].sum(-1) * 2 >= factor * factor
    best = votes[..., 1:].argmax(-1)
    return torch.where(covered, best, torch.full_like(best, -1))


def render_views(
    mesh: Mesh,
    cameras: Cameras,
    vertex_object_index: Tensor | None = None,
    supersample: int = 2,
    light: Light | None = None,
    background: float = 1.0,
    crease_deg: float = CREASE_DEG,
) -> dict[str, Tensor]:
    """Render a mesh from N cameras with headlight shading and antialiasing.

    Deterministic (the rasterizer's z-buffer breaks depth ties by face index) and
    differentiable w.r.t. vertex positions and colours inside faces (not at silhouettes).

    Args:
        mesh: V vertices, F faces; colours from ``mesh.vertex_colors`` (else light grey).
        cameras: N cameras of size H x W (e.g. :func:`default_cameras`).
        vertex_object_index: optional (V,) long object id per vertex (0..K-1), e.g. from
            :func:`~dreamreward.world.layout.scene_mesh`.
        supersample: render at this factor and box-filter down (1 = aliased).
        light: shading parameters (default :class:`Light`).
        background: grey level of the background.
        crease_deg: crease angle of the shading normals (see :func:`corner_normals`).

    Returns:
        dict with
        - ``"rgb"``: (N, H, W, 3) in [0, 1], composited on the background,
        - ``"mask"``: (N, H, W, 1) antialiased coverage in [0, 1],
        - ``"object_index"``: (N, H, W) long, -1 for background (only with
          ``vertex_object_index``): the object owning most covered sub-samples of a pixel
          covered at least half.
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    light = light or Light()
    n, h, w = len(cameras), cameras.height, cameras.width
    hs, ws = h * supersample, w * supersample
    cams = cameras.with_resolution(ws, hs)
    faces = mesh.faces.long()
    verts = mesh.vertices
    colors = mesh.vertex_colors
    if colors is None:
        colors = torch.tensor(DEFAULT_COLOR, dtype=verts.dtype, device=verts.device).expand_as(
            verts
        )

    _, face_z, face_image, valid = project_faces(mesh, cams)
    # Camera-space normals (n_cam = R^T n_world, as rows: n @ R), so the light is a constant.
    rot = cams.c2w[:, :3, :3].to(verts.dtype)  # (N, 3, 3)
    normals = corner_normals(verts.detach(), faces, crease_deg)  # (F, 3, 3)
    normals_cam = torch.einsum("fkc,ncd->nfkd", normals, rot)
    face_colors = colors[faces].unsqueeze(0).expand(n, -1, -1, -1)
    (color_img, normal_img), face_idx = rasterize(
        hs, ws, face_z, face_image, [face_colors, normals_cam], valid_faces=valid
    )
    mask = (face_idx >= 0).unsqueeze(-1).to(verts.dtype)  # (N, Hs, Ws, 1)

    # Flip normals facing away from the viewer: the view ray of pixel (x, y) in NDC is
    # (x tan_fovx, y tan_fovy, -1) in camera space.
    ys = 1.0 - (2.0 * torch.arange(hs, dtype=verts.dtype, device=verts.device) + 1.0) / hs
    xs = (2.0 * torch.arange(ws, dtype=verts.dtype, device=verts.device) + 1.0) / ws - 1.0
    tx = cams.tan_half_fovx.to(verts.dtype)[:, None, None]
    ty = cams.tan_half_fovy.to(verts.dtype)[:, None, None]
    facing = (
        normal_img[..., 0] * xs * tx + normal_img[..., 1] * ys[:, None] * ty - normal_img[..., 2]
    )  # n . ray: > 0 when the normal faces away
    normal_img = torch.where((facing > 0).unsqueeze(-1), -normal_img, normal_img)
    normal_img = F.normalize(normal_img, dim=-1)
    to_light = F.normalize(
        torch.tensor(light.direction, dtype=verts.dtype, device=verts.device), dim=0
    )
    lambert = (normal_img @ to_light).clamp_min(0.0).unsqueeze(-1)
    shaded = color_img * (light.ambient + light.diffuse * lambert)
    rgb = shaded * mask + background * (1.0 - mask)

    out = {
        "rgb": box_downsample(rgb, supersample).clamp(0.0, 1.0),
        "mask": box_downsample(mask, supersample),
    }
    if vertex_object_index is not None:
        if vertex_object_index.shape != (mesh.num_vertices,):
            raise ValueError(
                f"vertex_object_index must be (V,) = ({mesh.num_vertices},), "
                f"got {tuple(vertex_object_index.shape)}"
            )
        # Per-face owner plus a trailing -1, so face_idx == -1 (background) indexes it.
        face_object = torch.cat([vertex_object_index.long()[faces[:, 0]], faces.new_full((1,), -1)])
        owner = face_object[face_idx]  # (N, Hs, Ws)
        num_objects = int(vertex_object_index.max()) + 1 if vertex_object_index.numel() else 1
        out["object_index"] = _downsample_object_index(owner, supersample, num_objects)
    return out


def ground_truth_views(scene: Scene, cameras: Cameras) -> Tensor:
    """A scene rendered as the world shows it (its own layout, shading, supersampling): the
    reference the oracle's ceiling and ground-truth comparisons are measured on.

    Returns:
        (N, H, W, 3) in [0, 1] for the N cameras.
    """
    from dreamreward.world.layout import scene_mesh

    return render_views(scene_mesh(scene)[0], cameras)["rgb"]
