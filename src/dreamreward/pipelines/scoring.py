"""Score 3D assets with Reward3D: from tensors in Python, or from files on the command line.

Python::

    from dreamreward.pipelines import score, score_batch
    r = score("a red cube on top of a blue sphere", views)          # views (4, H, W, 3) in [0, 1]
    rs = score_batch(prompts, views_b, cameras_b)                   # (B, 4, ...) -> (B,)

Command line (``python -m dreamreward score``)::

    python -m dreamreward score --prompt "a red cube" --inputs '[asset_dir, mesh.glb]' --out s.csv

Each input is a folder of exactly 4 view images (sorted by name; an optional ``cameras.json``
holds their (4, 4, 4) camera-to-world matrices, otherwise the canonical front/side/back/side
orbit is assumed; an optional ``prompt.txt`` overrides ``--prompt``), a mesh file (PLY, OBJ,
GLB, ...: normalised to the primitives scene radius and rendered with the 4 canonical cameras),
or a folder of such inputs. The model defaults to the Reward3D that ships with the package
(trained on the primitives world); ``--model`` takes any export folder
(:mod:`dreamreward.models.reward3d.export`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dreamreward.models.reward3d.export import load_reward3d
from dreamreward.models.reward3d.heads import NUM_VIEWS
from dreamreward.models.reward3d.model import Reward3D
from dreamreward.models.reward3d.view_labels import asset_view_labels
from dreamreward.render.cameras import Cameras

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")
CANONICAL_LABELS = ("front", "side", "back", "side")

_default_model: Reward3D | None = None


def default_model() -> Reward3D:
    """The shipped primitives Reward3D, loaded once (frozen, eval mode)."""
    global _default_model
    if _default_model is None:
        _default_model = load_reward3d()
    return _default_model


def _labels(cameras: Tensor | Cameras | None, b: int) -> list[list[str]]:
    if cameras is None:
        return [list(CANONICAL_LABELS)] * b
    c2w = cameras.c2w if isinstance(cameras, Cameras) else cameras
    c2w = c2w.reshape(-1, NUM_VIEWS, 4, 4)
    if c2w.shape[0] != b:
        raise ValueError(f"cameras for {c2w.shape[0]} assets, views for {b}")
    return asset_view_labels(c2w)


def score_batch(
    prompts: Sequence[str],
    views: Tensor,
    cameras: Tensor | Cameras | None = None,
    model: Reward3D | None = None,
    batch_size: int = 16,
) -> Tensor:
    """Rewards of B assets.

    Args:
        prompts: B prompts.
        views: (B, 4, H, W, 3) or (B, 4, 3, H, W) renders in [0, 1], in camera order.
        cameras: (B, 4, 4, 4) camera-to-world matrices (Z-up world, OpenGL axes) deciding each
            view's prompt suffix (front / side / back / overhead), or None for the canonical
            front / side / back / side orbit.
        model: a Reward3D (default: the shipped primitives model).
        batch_size: assets per forward pass.

    Returns:
        (B,) rewards (differentiable w.r.t. ``views`` when autograd is enabled).
    """
    model = model or default_model()
    if views.ndim != 5 or views.shape[1] != NUM_VIEWS:
        raise ValueError(
            f"expected views (B, {NUM_VIEWS}, H, W, 3) or (B, {NUM_VIEWS}, 3, H, W), got "
            f"{tuple(views.shape)}"
        )
    prompts = list(prompts)
    if len(prompts) != views.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {views.shape[0]} assets")
    labels = _labels(cameras, views.shape[0])
    weight = next(model.parameters())
    if views.is_floating_point():  # float64 (numpy's default) or half views: the model's dtype
        views = views.to(dtype=weight.dtype)
    out = []
    for start in range(0, len(prompts), batch_size):
        stop = start + batch_size
        out.append(
            model.score(
                views[start:stop].to(weight.device), prompts[start:stop], labels[start:stop]
            )
        )
    return torch.cat(out)


def score(
    prompt: str,
    views: Tensor,
    cameras: Tensor | Cameras | None = None,
    model: Reward3D | None = None,
) -> float:
    """Reward of one asset: ``views`` (4, H, W, 3) or (4, 3, H, W) in [0, 1]; ``cameras``
    (4, 4, 4) camera-to-world or None (canonical orbit)."""
    if views.ndim != 4 or views.shape[0] != NUM_VIEWS:
        raise ValueError(
            f"expected {NUM_VIEWS} views (4, H, W, 3) or (4, 3, H, W), got {tuple(views.shape)}"
        )
    c2w = None
    if cameras is not None:
        c2w = (cameras.c2w if isinstance(cameras, Cameras) else cameras).unsqueeze(0)
    with torch.no_grad():
        return float(score_batch([prompt], views.unsqueeze(0), c2w, model)[0])


# ------------------------------------------------------------------------------- file inputs
@dataclass
class AssetViews:
    """One input resolved to 4 views: ``views`` (4, H, W, 3) in [0, 1], ``c2w`` (4, 4, 4) or
    None, the prompt found next to it (or None) and how the views were obtained."""

    name: str
    views: Tensor
    c2w: Tensor | None
    prompt: str | None
    source: Literal["images", "mesh"]


MIN_VIEW_SIDE = 16
MAX_VIEW_SIDE = 4096
MAX_VIEW_ASPECT = 2.0


def check_view_size(path: str | os.PathLike[str], size: tuple[int, int]) -> None:
    """Refuse a view that resizing would turn into something else: smaller than
    ``MIN_VIEW_SIDE`` (a 1 x 1 image has no asset in it), larger than ``MAX_VIEW_SIDE``
    (decoding it would take gigabytes), or far from square (views are square renders)."""
    width, height = size
    if min(width, height) < MIN_VIEW_SIDE:
        raise ValueError(
            f"{path}: {width}x{height} px is too small for a view (>= {MIN_VIEW_SIDE})"
        )
    if max(width, height) > MAX_VIEW_SIDE:
        raise ValueError(
            f"{path}: {width}x{height} px is too large for a view (<= {MAX_VIEW_SIDE})"
        )
    if max(width, height) / min(width, height) > MAX_VIEW_ASPECT:
        raise ValueError(
            f"{path}: {width}x{height} px is not a view (views are square renders; aspect "
            f"ratio at most {MAX_VIEW_ASPECT})"
        )


def read_view_folder(folder: str | os.PathLike[str], image_size: int | None = None) -> AssetViews:
    """A folder of exactly 4 images (+ optional ``cameras.json``, ``prompt.txt``)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    irregular = [p.name for p in files if not p.is_file()]
    if irregular:  # opening a FIFO or device would block or read forever
        raise ValueError(f"{folder}: {irregular} are not regular files")
    if len(files) != NUM_VIEWS:
        raise ValueError(
            f"{folder}: expected exactly {NUM_VIEWS} view images ({', '.join(IMAGE_SUFFIXES)}), "
            f"found {len(files)}"
        )
    images = []
    for path in files:
        try:
            with Image.open(path) as img:  # reads the header only, until convert
                check_view_size(path, img.size)
                img = img.convert("RGB")
                if image_size is not None and img.size != (image_size, image_size):
                    img = img.resize((image_size, image_size), Image.BICUBIC)
                images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0))
        except (OSError, Image.DecompressionBombError) as err:
            raise ValueError(f"{path}: not a readable image ({err})") from err
    sizes = {tuple(img.shape) for img in images}
    if len(sizes) > 1:
        raise ValueError(f"{folder}: views have different sizes {sorted(sizes)}; pass image_size")
    c2w = None
    cameras_file = folder / "cameras.json"
    if cameras_file.is_file():
        try:
            c2w = torch.tensor(json.loads(cameras_file.read_text()), dtype=torch.float32)
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"{cameras_file}: not a JSON list of 4x4 matrices ({err})") from err
        if tuple(c2w.shape) != (NUM_VIEWS, 4, 4):
            raise ValueError(
                f"{cameras_file}: expected {NUM_VIEWS} camera-to-world 4x4 matrices, got shape "
                f"{tuple(c2w.shape)}"
            )
    prompt_file = folder / "prompt.txt"
    prompt = prompt_file.read_text().strip() if prompt_file.is_file() else None
    return AssetViews(folder.name, torch.stack(images), c2w, prompt or None, "images")


def render_mesh_file(
    path: str | os.PathLike[str], image_size: int = 64, up_axis: Literal["z", "y"] = "z"
) -> AssetViews:
    """Render a mesh file with the 4 canonical cameras (what the primitives model saw).

    The mesh is centred and scaled to the primitives scene radius; ``up_axis="y"`` rotates a
    Y-up mesh (glTF's convention) into our Z-up world first.
    """
    from dreamreward.render.mesh import Mesh, load_mesh
    from dreamreward.world.layout import DEFAULT_RADIUS
    from dreamreward.world.views import default_cameras, render_views

    mesh = load_mesh(path)  # names the file if it is not a readable, finite mesh
    verts = mesh.vertices
    if up_axis == "y":  # (x, y, z) Y-up -> (x, -z, y) Z-up
        verts = torch.stack([verts[:, 0], -verts[:, 2], verts[:, 1]], dim=-1)
    lo, hi = verts.min(0).values, verts.max(0).values
    centre = (lo + hi) / 2
    radius = (verts - centre).norm(dim=-1).max()
    corners = verts[mesh.faces]  # (F, 3, 3)
    area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(
        dim=-1
    )
    if float(radius) <= 1e-8 or float(area.sum()) <= 0.0:
        raise ValueError(
            f"{path}: the mesh has no extent (all vertices at one point, or zero area)"
        )
    verts = (verts - centre) * (DEFAULT_RADIUS / radius)
    cameras = default_cameras(image_size)
    rendered = render_views(Mesh(verts, mesh.faces, mesh.vertex_colors), cameras)
    return AssetViews(Path(path).name, rendered["rgb"], cameras.c2w, None, "mesh")


def resolve_inputs(
    inputs: Sequence[str], image_size: int = 64, up_axis: Literal["z", "y"] = "z"
) -> list[AssetViews]:
    """Expand and load the inputs (see the module docstring)."""
    assets = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        if path.is_file():
            if path.suffix.lower() not in MESH_SUFFIXES:
                raise ValueError(
                    f"{path}: not a mesh file ({', '.join(MESH_SUFFIXES)}); pass a folder of "
                    f"{NUM_VIEWS} view images instead"
                )
            assets.append(render_mesh_file(path, image_size, up_axis))
        elif any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            assets.append(read_view_folder(path, image_size))
        else:
            children = sorted(
                str(p) for p in path.iterdir() if p.is_dir() or p.suffix.lower() in MESH_SUFFIXES
            )
            if not children:
                raise ValueError(f"{path}: no view images, asset folders or mesh files inside")
            assets += resolve_inputs(children, image_size, up_axis)
    return assets


def score_files(
    inputs: str | list[str],
    out: str,
    prompt: str | None = None,
    model: str | None = None,
    image_size: int = 64,
    up_axis: Literal["z", "y"] = "z",
) -> list[dict[str, object]]:
    """Score 4-view folders and mesh files and write a CSV or JSON table.

    Args:
        inputs: a folder of 4 view images, a mesh file, or a folder of those; or a list of them
            (on the command line: ``--inputs '[a, b]'``).
        out: output file, ``.csv`` or ``.json``.
        prompt: the prompt for inputs without their own ``prompt.txt``.
        model: a Reward3D export folder (default: the shipped primitives model).
        image_size: views are resized to / meshes rendered at this size.
        up_axis: ``y`` for Y-up meshes (glTF); ``z`` for our Z-up world.

    Returns:
        the rows written: input, prompt, reward, source.
    """
    if Path(out).suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out must end in .csv or .json, got {out!r}")
    if prompt is not None and not prompt.strip():
        raise ValueError("--prompt is empty")
    if not MIN_VIEW_SIDE <= image_size <= MAX_VIEW_SIDE:
        raise ValueError(
            f"--image_size must be between {MIN_VIEW_SIDE} and {MAX_VIEW_SIDE}, got {image_size}"
        )
    reward = load_reward3d(model) if model else default_model()
    assets = resolve_inputs([inputs] if isinstance(inputs, str) else inputs, image_size, up_axis)
    if not assets:
        raise ValueError("--inputs names no asset")
    missing = [a.name for a in assets if not (a.prompt or prompt)]
    if missing:
        raise ValueError(f"no prompt for {missing}: pass --prompt or add a prompt.txt")
    rows: list[dict[str, object]] = []
    with torch.no_grad():
        for asset in assets:
            text = asset.prompt or prompt
            assert text is not None
            value = score(text, asset.views, asset.c2w, reward)
            rows.append(
                {"input": asset.name, "prompt": text, "reward": value, "source": asset.source}
            )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out.lower().endswith(".json"):
        Path(out).write_text(json.dumps(rows, indent=2))
    else:
        with open(out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for row in rows:
        print(f"{row['reward']:+.4f}  {row['input']}  ({row['prompt']})")
    return rows
