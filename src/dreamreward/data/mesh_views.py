"""Multi-view renders of a reference mesh: the data of the renderer's regression job
(``configs/render/fit_mesh.yaml``)."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dreamreward.render.cameras import Cameras, orbit_cameras
from dreamreward.render.mesh import Mesh, load_mesh
from dreamreward.render.mesh_render import render_mesh_antialiased
from dreamreward.render.rays import generate_pinhole_rays


def position_colors(vertices: Tensor) -> Tensor:
    """(V, 3) positions -> (V, 3) smooth RGB colours, so the reference has colour to recover."""
    lo, hi = vertices.min(0).values, vertices.max(0).values
    unit = (vertices - lo) / (hi - lo).clamp_min(1e-8)
    return 0.15 + 0.7 * unit


def fibonacci_orbit(
    count: int,
    distance: float,
    fovy_deg: float,
    size: int,
    min_elevation_deg: float = -30.0,
    max_elevation_deg: float = 75.0,
) -> tuple[Cameras, Tensor, Tensor]:
    """``count`` cameras spread evenly (golden-angle spiral) over a band of elevations.

    Returns:
        cameras, elevation_deg (count,), azimuth_deg (count,).
    """
    k = torch.arange(count, dtype=torch.float32) + 0.5
    lo, hi = math.sin(math.radians(min_elevation_deg)), math.sin(math.radians(max_elevation_deg))
    elevation = torch.rad2deg(torch.asin(lo + (hi - lo) * k / count))
    azimuth = torch.remainder(k * 137.50776405, 360.0) - 180.0
    return orbit_cameras(elevation, azimuth, distance, fovy_deg, size), elevation, azimuth


def sample_training_batch(
    views: dict[str, Tensor], rays_per_batch: int, views_per_batch: int, generator: torch.Generator
) -> dict[str, Tensor]:
    """Draw random rays (NeRF stage) and whole views (DMTet stage) from all training views.

    Args:
        views: the training set as served by the datamodule: ``rays_o``/``rays_d`` (P, 3),
            ``rgb`` (V, H, W, 3), ``mask`` (V, H, W, 1), ``c2w`` (V, 4, 4), ``fovy`` (V,).
        generator: CPU generator; the module seeds it with the global step, so a resumed run
            draws exactly what the uninterrupted run drew.

    Returns:
        ``rays_o``, ``rays_d``, ``rays_rgb`` (R, 3), ``rays_mask`` (R, 1) and ``c2w``, ``fovy``,
        ``rgb``, ``mask`` of ``views_per_batch`` whole views.
    """
    total = views["rays_o"].shape[0]
    pick = torch.randint(total, (rays_per_batch,), generator=generator).to(views["rays_o"].device)
    whole = torch.randperm(views["rgb"].shape[0], generator=generator)[:views_per_batch]
    whole = whole.to(views["rgb"].device)
    return {
        "rays_o": views["rays_o"][pick],
        "rays_d": views["rays_d"][pick],
        "rays_rgb": views["rgb"].reshape(-1, 3)[pick],
        "rays_mask": views["mask"].reshape(-1, 1)[pick],
        "c2w": views["c2w"][whole],
        "fovy": views["fovy"][whole],
        "rgb": views["rgb"][whole],
        "mask": views["mask"][whole],
    }


class _TrainingSet(Dataset):
    """Every item is the whole training set (no copy): the module draws its rays and views
    from it with a generator keyed by the global step, which makes resumed runs exact whatever
    the dataloader position."""

    def __init__(self, views: dict[str, Tensor], length: int) -> None:
        self.views, self.length = views, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.views


class _Views(Dataset):
    """All held-out views as one batch."""

    def __init__(self, views: dict[str, Tensor]) -> None:
        self.views = views

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: self.views[k] for k in ("c2w", "fovy", "rgb", "mask")}


class MultiViewMeshDataModule(L.LightningDataModule):
    """Renders a reference mesh from many cameras with the project's rasterizer.

    Each training batch is the whole training set (rays and views); the module samples from it
    (:func:`sample_training_batch`). Validation/test hold held-out views at other angles.

    Args:
        mesh: a mesh file, or the name of a bundled one (``"ant.ply"``).
        image_size: square render size in pixels.
        num_train_views, num_val_views: camera counts (spiral over the sphere; validation views
            are offset so no held-out view equals a training view).
        batches_per_epoch: length of an epoch (only sets how often epoch-end hooks run).
        object_radius: the mesh is centred and scaled to this bounding half-diagonal.
        camera_distance, fovy_deg: orbit radius and vertical field of view.
        supersample: the references are rendered at ``supersample`` times the size and box
            filtered, so they are antialiased like a volume render (hard rasterization aliases
            thin parts differently in every view, which no 3D model can match).
        up_axis: the mesh file's up axis; ``"y"`` (most PLY/OBJ/glTF files) is rotated to our Z-up.
        seed: seed of the ray sampling.
    """

    def __init__(
        self,
        mesh: str = "ant.ply",
        image_size: int = 64,
        num_train_views: int = 32,
        num_val_views: int = 4,
        batches_per_epoch: int = 200,
        object_radius: float = 0.8,
        camera_distance: float = 2.2,
        fovy_deg: float = 45.0,
        up_axis: Literal["y", "z"] = "z",
        supersample: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.mesh_path = mesh
        self.image_size = image_size
        self.num_train_views = num_train_views
        self.num_val_views = num_val_views
        self.batches_per_epoch = batches_per_epoch
        self.object_radius = object_radius
        self.camera_distance = camera_distance
        self.fovy_deg = fovy_deg
        if up_axis not in ("y", "z"):
            raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
        self.up_axis = up_axis
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        self.supersample = supersample
        self.seed = seed
        self.reference_mesh: Mesh | None = None
        self.train_views: dict[str, Tensor] | None = None
        self.val_views: dict[str, Tensor] | None = None

    def _render(self, cameras: Cameras) -> dict[str, Tensor]:
        mesh = self.reference_mesh
        assert mesh is not None
        out = render_mesh_antialiased(mesh, cameras, 1.0, self.supersample)  # white background
        rgb, mask = out["rgb"], out["mask"]
        origins, directions = generate_pinhole_rays(cameras)
        return {
            "c2w": cameras.c2w,
            "fovy": cameras.fovy,
            "rgb": rgb,
            "mask": mask,
            "rays_o": origins.reshape(-1, 3),
            "rays_d": directions.reshape(-1, 3),
        }

    def setup(self, stage: str | None = None) -> None:
        if self.reference_mesh is not None:
            return
        mesh = load_mesh(self.mesh_path).normalized(self.object_radius)
        if self.up_axis == "y":  # (x, y, z) -> (x, -z, y): a +90 degree turn about X
            v = mesh.vertices
            mesh = Mesh(
                torch.stack([v[:, 0], -v[:, 2], v[:, 1]], dim=-1), mesh.faces, mesh.vertex_colors
            )
        if mesh.vertex_colors is None:
            mesh = Mesh(mesh.vertices, mesh.faces, position_colors(mesh.vertices))
        self.reference_mesh = mesh
        size = self.image_size
        train_cams, _, _ = fibonacci_orbit(
            self.num_train_views, self.camera_distance, self.fovy_deg, size
        )
        val_azimuth = torch.arange(self.num_val_views, dtype=torch.float32)
        val_azimuth = val_azimuth * (360.0 / self.num_val_views) + 45.0 / 2
        val_cams = orbit_cameras(20.0, val_azimuth, self.camera_distance, self.fovy_deg, size)
        with torch.no_grad():
            self.train_views = self._render(train_cams)
            self.val_views = self._render(val_cams)

    def cameras_from_batch(self, batch: dict[str, Tensor]) -> Cameras:
        return Cameras(batch["c2w"], batch["fovy"], self.image_size, self.image_size)

    def train_dataloader(self) -> DataLoader:
        assert self.train_views is not None
        ds = _TrainingSet(self.train_views, self.batches_per_epoch)
        return DataLoader(ds, batch_size=None, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        assert self.val_views is not None
        return DataLoader(_Views(self.val_views), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
