"""A triangle mesh container and loading of reference meshes."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class Mesh:
    """A single triangle mesh.

    Attributes:
        vertices: (V, 3) float positions.
        faces: (F, 3) long vertex indices, counter-clockwise seen from outside.
        vertex_colors: optional (V, 3) float RGB in [0, 1].
    """

    vertices: Tensor
    faces: Tensor
    vertex_colors: Tensor | None = None

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[-1] != 3:
            raise ValueError(f"Mesh.vertices must be (V, 3), got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[-1] != 3:
            raise ValueError(f"Mesh.faces must be (F, 3), got {tuple(self.faces.shape)}")
        if self.faces.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"Mesh.faces must be an integer tensor, got {self.faces.dtype}")
        if self.faces.numel() and (
            int(self.faces.min()) < 0 or int(self.faces.max()) >= self.vertices.shape[0]
        ):
            raise ValueError(
                f"Mesh.faces index vertices outside [0, {self.vertices.shape[0]}): "
                f"min {int(self.faces.min())}, max {int(self.faces.max())}"
            )
        if self.vertex_colors is not None and self.vertex_colors.shape != self.vertices.shape:
            raise ValueError(
                f"Mesh.vertex_colors must be (V, 3) = {tuple(self.vertices.shape)}, "
                f"got {tuple(self.vertex_colors.shape)}"
            )

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def to(self, device: torch.device | str) -> Mesh:
        colors = None if self.vertex_colors is None else self.vertex_colors.to(device)
        return Mesh(self.vertices.to(device), self.faces.to(device), colors)

    def detach(self) -> Mesh:
        colors = None if self.vertex_colors is None else self.vertex_colors.detach()
        return Mesh(self.vertices.detach(), self.faces, colors)

    def normalized(self, radius: float = 0.8) -> Mesh:
        """Centre the bounding box at the origin and scale its half-diagonal to ``radius``."""
        lo, hi = self.vertices.min(0).values, self.vertices.max(0).values
        centre, half_diag = (lo + hi) / 2, (hi - lo).norm() / 2
        return Mesh((self.vertices - centre) * (radius / half_diag), self.faces, self.vertex_colors)


def bundled_mesh_path(name: str) -> Path:
    """Path of a mesh shipped in ``dreamreward/assets/meshes`` (e.g. ``"ant.ply"``)."""
    path = Path(str(resources.files("dreamreward") / "assets" / "meshes" / name))
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*.ply"))
        raise FileNotFoundError(f"no bundled mesh {name!r}; available: {available}")
    return path


def load_mesh(path: str | Path, dtype: torch.dtype = torch.float32) -> Mesh:
    """Load a triangle mesh file (PLY, OBJ, GLB, STL, ...) with trimesh.

    ``path`` may also be the name of a bundled mesh such as ``"ant.ply"``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a mesh trimesh can read (empty, random bytes, another
            format), holds no triangles, has NaN / infinite vertices or faces that index past
            the vertices; each names the file.
    """
    import trimesh

    path = Path(path)
    if not path.exists() and not path.is_absolute() and len(path.parts) == 1:
        path = bundled_mesh_path(path.name)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a mesh")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # noqa: BLE001 - trimesh raises many kinds; name the file
        raise ValueError(
            f"{path}: not a mesh file trimesh can read ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"{path}: no triangle faces found")
    vertices = torch.as_tensor(loaded.vertices, dtype=dtype)
    faces = torch.as_tensor(loaded.faces, dtype=torch.long)
    if not bool(torch.isfinite(vertices).all()):
        raise ValueError(f"{path}: the mesh has NaN or infinite vertex coordinates")
    if int(faces.min()) < 0 or int(faces.max()) >= len(vertices):
        raise ValueError(f"{path}: faces index vertices that do not exist")
    colors = None
    vc = getattr(loaded.visual, "vertex_colors", None)
    if loaded.visual.kind == "vertex" and vc is not None and len(vc) == len(vertices):
        colors = torch.as_tensor(vc[:, :3], dtype=dtype) / 255.0
    return Mesh(vertices, faces, colors)
