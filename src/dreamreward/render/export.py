"""Writing meshes, image grids and turntables to disk.

Meshes go through trimesh:

- **GLB** (binary glTF 2.0). glTF is Y-up with the asset's front facing +Z; our world is Z-up
  with the front at azimuth 0 (+X, where Reward3D's
  :func:`~dreamreward.models.reward3d.view_labels.view_labels` says "front view").
  :data:`GLTF_FROM_WORLD` maps ours onto glTF's — our +Z becomes glTF +Y and our
  +X becomes glTF +Z — so any glTF viewer shows the object upright, and its default camera (on
  +Z) sees what our azimuth-0 camera sees. It is a proper rotation (determinant +1), so the
  counter-clockwise winding and the normals stay outward. Vertex colours are written as
  ``COLOR_0``.
- **OBJ** keeps our coordinates unchanged (OBJ has no axis convention; most tools assume Y-up,
  so import it as Z-up). Vertex colours use the common ``v x y z r g b`` extension (r, g, b as
  floats in [0, 1]), which Blender, MeshLab and trimesh read; no ``.mtl`` file is written.

Colours are quantised to 8 bits in both formats. Images use Pillow only (no ffmpeg needed).
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dreamreward.render.mesh import Mesh

__all__ = [
    "GLTF_FROM_WORLD",
    "count_non_manifold_edges",
    "export_mesh",
    "gltf_to_world",
    "images_to_uint8",
    "save_image_grid",
    "save_turntable",
    "world_to_gltf",
]

MESH_SUFFIXES = (".glb", ".obj")

#: (3, 3) rotation taking our Z-up, front-at-+X world to glTF's Y-up, front-at-+Z frame:
#: ``gltf = GLTF_FROM_WORLD @ world``, i.e. (x, y, z) -> (y, z, x).
GLTF_FROM_WORLD = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def world_to_gltf(points: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """(..., 3) points from our world frame to glTF's (what :func:`export_mesh` writes)."""
    return _rotate(points, GLTF_FROM_WORLD)


def gltf_to_world(points: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """(..., 3) points read from a glTF/GLB file back into our world frame."""
    return _rotate(points, GLTF_FROM_WORLD.T)


def _rotate(points: np.ndarray | Tensor, rotation: np.ndarray) -> np.ndarray | Tensor:
    if isinstance(points, Tensor):
        return points @ torch.as_tensor(rotation.T, dtype=points.dtype, device=points.device)
    return np.asarray(points) @ rotation.T


# ----------------------------------------------------------------------------------------- mesh
def count_non_manifold_edges(faces: np.ndarray | Tensor) -> int:
    """Number of undirected edges shared by more than two faces.

    Boundary edges (one face) are not counted: an open mesh is still a manifold with boundary.

    Args:
        faces: (F, 3) vertex indices.
    """
    faces = faces.detach().cpu().numpy() if isinstance(faces, Tensor) else np.asarray(faces)
    if len(faces) == 0:
        return 0
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts > 2).sum())


def _checked_arrays(mesh: Mesh, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate ``mesh`` and return float64 vertices, int64 faces, uint8 RGBA colours."""
    if mesh.num_faces == 0:
        raise ValueError(f"cannot export {path}: the mesh has no faces")
    vertices = mesh.vertices.detach().cpu().to(torch.float64).numpy()
    faces = mesh.faces.detach().cpu().to(torch.int64).numpy()
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise ValueError(f"cannot export {path}: {bad} vertices have NaN or infinite coordinates")
    lo, hi = int(faces.min()), int(faces.max())
    if lo < 0 or hi >= len(vertices):
        raise ValueError(
            f"cannot export {path}: face indices span [{lo}, {hi}] but the mesh has "
            f"{len(vertices)} vertices"
        )
    colors = None
    if mesh.vertex_colors is not None:
        rgb = mesh.vertex_colors.detach().cpu().to(torch.float64).numpy()
        if not np.isfinite(rgb).all():
            raise ValueError(f"cannot export {path}: vertex colours contain NaN or infinity")
        rgb = np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
        colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return vertices, faces, colors


def export_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write ``mesh`` as GLB or OBJ (chosen by the suffix), with its vertex colours if any.

    GLB is rotated into glTF's Y-up frame (see the module docstring and
    :data:`GLTF_FROM_WORLD`); OBJ keeps our Z-up coordinates and writes colours as
    ``v x y z r g b``. Parent directories are created. Vertex order and faces are kept as they
    are (no merging or cleaning).

    Args:
        mesh: (V, 3) vertices, (F, 3) faces, optional (V, 3) colours in [0, 1] (clamped).
        path: destination ending in ``.glb`` or ``.obj``.

    Returns:
        The path written.

    Raises:
        ValueError: another suffix, no faces, NaN/inf vertices or colours, or face indices out
            of range. Non-manifold meshes are written, with a warning giving the number of
            edges shared by more than two faces.
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(
            f"cannot export {path}: unsupported mesh format {suffix or '(none)'!r}; "
            f"use one of {', '.join(MESH_SUFFIXES)}"
        )
    vertices, faces, colors = _checked_arrays(mesh, path)
    non_manifold = count_non_manifold_edges(faces)
    if non_manifold:
        warnings.warn(
            f"{path}: the mesh has {non_manifold} non-manifold edges (shared by more than two "
            "faces); writing it anyway",
            stacklevel=2,
        )
    if suffix == ".glb":
        vertices = world_to_gltf(vertices)
    # process=False / validate=False: keep the vertex order and every face as given, so the
    # file lines up with the tensors (trimesh would otherwise merge and drop vertices/faces).
    tm = trimesh.Trimesh(
        vertices=vertices, faces=faces, vertex_colors=colors, process=False, validate=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".glb":
        path.write_bytes(tm.export(file_type="glb", include_normals=True))
    else:
        text = trimesh.exchange.obj.export_obj(
            tm,
            include_normals=True,
            include_color=True,
            include_texture=False,
            header="dreamreward",
        )
        path.write_text(text)
    return path


# --------------------------------------------------------------------------------------- images
ImagesLike = Tensor | np.ndarray


def images_to_uint8(images: ImagesLike) -> np.ndarray:
    """Convert a batch of images to a (N, H, W, C) uint8 array.

    Args:
        images: (N, H, W, C) or (N, C, H, W) with C in {1, 3, 4}, or a single image (H, W, C)
            / (C, H, W). Float images are in [0, 1] (clamped; NaN -> 0); integer images in
            [0, 255]. Tensors may be on any device and require grad. A layout is read as
            channels-last whenever the last axis has 1, 3 or 4 entries.

    Returns:
        (N, H, W, C) uint8.
    """
    if isinstance(images, Tensor):
        images = images.detach().cpu()
        if images.is_floating_point():
            images = images.float()  # numpy has no bfloat16
        images = images.numpy()
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) or (N, C, H, W), got shape {arr.shape}")
    if arr.shape[-1] not in (1, 3, 4):
        if arr.shape[1] not in (1, 3, 4):
            raise ValueError(f"images need 1, 3 or 4 channels, got shape {arr.shape}")
        arr = arr.transpose(0, 2, 3, 1)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.integer):
        return np.ascontiguousarray(np.clip(arr, 0, 255).astype(np.uint8))
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
    return np.ascontiguousarray(np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8))


def _to_pil(image: np.ndarray):  # -> PIL.Image.Image
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def file_slug(text: str, max_length: int = 60) -> str:
    """A file-name-safe form of a prompt: lower-case letters and digits joined by ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_length] or "prompt"


def unique_slug(text: str, max_length: int = 48) -> str:
    """A file-name-safe name that differs for every distinct ``text``: :func:`file_slug` (which
    maps "a red cube" and "A red cube!" to one name, and every emoji-only prompt to "prompt")
    followed by 8 hex digits of the exact text's SHA-1."""
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{file_slug(text, max_length)}_{digest}"


def read_image_row(path: str | Path, count: int, padding: int = 2) -> Tensor:
    """The ``count`` tiles of a one-row :func:`save_image_grid` PNG (e.g. a run's
    ``views.png``): (count, H, W, 3) float in [0, 1], the tile size read off the image.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the image is not ``count`` square tiles in a row with that padding.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image grid at {path}")
    image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float() / 255
    height, width = image.shape[:2]
    size = height - 2 * padding
    if size < 1 or width != count * size + (count + 1) * padding:
        raise ValueError(
            f"{path} ({width}x{height}) is not one row of {count} square tiles with "
            f"{padding}-pixel padding"
        )
    tiles = [
        image[padding : padding + size, padding + i * (size + padding) :][:, :size]
        for i in range(count)
    ]
    return torch.stack(tiles)


SCORED_VIEWS = "eval_views.png"
"""A run's canonical views at the resolution its scores were computed from (one row of 4)."""


def read_scored_views(run_dir: str | Path) -> tuple[Tensor, str]:
    """The 4 canonical views a DreamFL run was scored on, (4, H, W, 3) in [0, 1], and the file
    they came from: ``eval_views.png``, or for runs made before it existed the one-row
    ``views.png`` (today ``views.png`` is the larger picture for people, with the ground truth
    under it).

    Raises:
        FileNotFoundError: the run folder has neither file.
    """
    folder = Path(run_dir)
    for name in (SCORED_VIEWS, "views.png"):
        if (folder / name).is_file():
            return read_image_row(folder / name, 4), name
    raise FileNotFoundError(f"{folder} has no {SCORED_VIEWS} (nor an older views.png)")


def save_image_grid(
    images: ImagesLike,
    path: str | Path,
    ncols: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
) -> Path:
    """Tile N images into one PNG, row by row.

    Args:
        images: (N, H, W, C) or (N, C, H, W) in [0, 1] (see :func:`images_to_uint8`).
        path: destination ``.png``; parent directories are created.
        ncols: images per row (default ``ceil(sqrt(N))``).
        padding: pixels between images and around the border.
        pad_value: grey level of the padding in [0, 1] (default white).

    Returns:
        The path written. The PNG is ``rows*H + (rows+1)*padding`` high and
        ``ncols*W + (ncols+1)*padding`` wide.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_image_grid writes PNG: give a .png path, got {path}")
    arr = images_to_uint8(images)
    n, h, w, c = arr.shape
    if n == 0:
        raise ValueError(f"cannot write {path}: no images")
    ncols = min(n, ncols or math.ceil(math.sqrt(n)))
    if ncols < 1 or padding < 0:
        raise ValueError(f"need ncols >= 1 and padding >= 0, got ncols={ncols}, {padding=}")
    nrows = math.ceil(n / ncols)
    fill = round(min(max(pad_value, 0.0), 1.0) * 255)
    grid = np.full(
        (nrows * h + (nrows + 1) * padding, ncols * w + (ncols + 1) * padding, c), fill, np.uint8
    )
    for i in range(n):
        top = padding + (i // ncols) * (h + padding)
        left = padding + (i % ncols) * (w + padding)
        grid[top : top + h, left : left + w] = arr[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    _to_pil(grid).save(path, format="PNG")
    return path


def save_turntable(
    frames: ImagesLike | Sequence,
    path: str | Path,
    duration_ms: int = 100,
    loop: int = 0,
) -> Path:
    """Write frames as a looping animated GIF (or MP4 when ``imageio-ffmpeg`` is installed).

    Args:
        frames: (T, H, W, 3) or (T, 3, H, W) in [0, 1], or a list of PIL images (or of
            (H, W, 3) / (3, H, W) tensors) of one size.
        path: ``.gif`` (Pillow, always available) or ``.mp4`` (needs the optional
            ``imageio-ffmpeg`` package; odd sizes are padded by one pixel for H.264).
        duration_ms: display time of each frame.
        loop: GIF repeat count, 0 = forever.

    Returns:
        The path written. Note that Pillow merges *identical* consecutive GIF frames into one
        longer frame, so a GIF may hold fewer frames than given.

    Raises:
        ValueError: another suffix, no frames, or frames of different sizes.
        ImportError: ``.mp4`` without ``imageio-ffmpeg``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"save_turntable writes .gif (or .mp4 with imageio-ffmpeg), got {path}")
    arr = _frames_to_uint8(frames)
    if len(arr) == 0:
        raise ValueError(f"cannot write {path}: no frames")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]  # neither GIF nor yuv420p MP4 keep alpha
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg
        except ImportError:
            raise ImportError(
                f"cannot write {path}: MP4 needs the optional package imageio-ffmpeg "
                "(pip install imageio-ffmpeg); GIF is supported without it, use a .gif path"
            ) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_mp4(imageio_ffmpeg, arr, path, fps=1000.0 / duration_ms)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = [_to_pil(frame) for frame in arr]
    pil[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=pil[1:],
        duration=duration_ms,
        loop=loop,
        disposal=2,  # each frame replaces the previous one entirely
    )
    return path


def _frames_to_uint8(frames: ImagesLike | Sequence) -> np.ndarray:
    """Tensor/array frames, or a list of PIL images / single-image arrays -> (T, H, W, C)."""
    if isinstance(frames, Tensor | np.ndarray):
        return images_to_uint8(frames)
    arrays = [
        np.asarray(f.convert("RGB")) if hasattr(f, "convert") else images_to_uint8(f)[0]
        for f in frames
    ]
    if not arrays:
        return np.zeros((0, 1, 1, 3), np.uint8)
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"turntable frames must share one size, got {sorted(sizes)}")
    return np.stack(arrays)


def _write_mp4(imageio_ffmpeg, frames: np.ndarray, path: Path, fps: float) -> None:
    """H.264 needs even sizes: pad by edge replication rather than let ffmpeg rescale."""
    _, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    writer = imageio_ffmpeg.write_frames(
        str(path), (w + w % 2, h + h % 2), fps=fps, macro_block_size=1, quality=8
    )
    writer.send(None)  # start the generator
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
