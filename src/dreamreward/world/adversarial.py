"""Adversarial assets for the oracle: what it must rank below the ground truth, and what it must
keep close to it.

Each kind turns a scene and its cameras into 4 views, deterministically (a seed where there is
randomness). Two families:

- :data:`MUST_FAIL`: degenerate frames (a flat frame of each named colour, uniform noise, a
  blob covering both objects) and wrong assets (the right colour in a wrong shape, one object
  missing, swapped colours, a wrong relation, a Janus asset, the asset shifted half out of the
  frame, scaled 0.5x or 2x). The oracle must score each clearly below the ground truth.
- :data:`MUST_PASS`: harmless differences (a small shift, a 0.9x / 1.1x scale, a slight blur).
  The oracle must keep each close to the ground truth.

Kinds that need two objects (blob, missing object, swapped colours, wrong relation) return
``None`` for one-object scenes, as do swapped colours for two objects of one colour. Used by
``tests/world/test_oracle_adversarial.py`` and ``bench/oracle.py`` (the README's table).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from dreamreward.render.cameras import Cameras
from dreamreward.render.mesh import Mesh
from dreamreward.world.candidates import alter_scene
from dreamreward.world.layout import merge_meshes, object_meshes, scene_mesh
from dreamreward.world.scene import COLORS, RELATIONS, SHAPES, Scene
from dreamreward.world.shapes import primitive_mesh
from dreamreward.world.views import ground_truth_views, render_views

AdversaryFn = Callable[[Scene, Cameras, int], "Tensor | None"]


def _render(mesh: Mesh, cameras: Cameras) -> Tensor:
    return render_views(mesh, cameras)["rgb"]


def _transformed(scene: Scene, cameras: Cameras, scale: float, shift: tuple[float, ...]) -> Tensor:
    mesh, _ = scene_mesh(scene)
    moved = mesh.vertices * scale + torch.tensor(shift, dtype=mesh.vertices.dtype)
    return _render(Mesh(moved, mesh.faces, mesh.vertex_colors), cameras)


def flat_frame(color: str) -> AdversaryFn:
    """Every pixel of every view one named colour."""

    def make(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
        rgb = torch.tensor(COLORS[color])
        return rgb.expand(len(cameras), cameras.height, cameras.width, 3).clone()

    return make


def noise(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
    """Uniform noise in [0, 1] (a diffusion prior sampled with too few steps looks like this)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(len(cameras), cameras.height, cameras.width, 3, generator=gen)


def blob(scene: Scene, cameras: Cameras, seed: int) -> Tensor | None:
    """One ellipsoid filling the scene's bounding box, each point coloured like the nearest
    object: the right colours roughly in the right places, but no two separate objects."""
    if scene.num_objects < 2:
        return None
    parts = object_meshes(scene)
    points = torch.cat([m.vertices for m in parts])
    lo, hi = points.min(0).values, points.max(0).values
    sphere = primitive_mesh("sphere")
    unit = sphere.vertices / sphere.vertices.norm(dim=-1).amax()  # radius 1
    vertices = (lo + hi) / 2 + unit * (hi - lo) / 2
    owner = torch.cat([torch.full((m.num_vertices,), i) for i, m in enumerate(parts)])
    nearest = owner[torch.cdist(vertices, points).argmin(dim=1)]
    palette = torch.tensor([COLORS[o.color] for o in scene.objects])
    return _render(Mesh(vertices, sphere.faces, palette[nearest]), cameras)


def wrong_shape(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
    """The right colours, one object in another shape."""
    objs = list(scene.objects)
    i = seed % len(objs)
    shape = SHAPES[(SHAPES.index(objs[i].shape) + 1 + seed % (len(SHAPES) - 1)) % len(SHAPES)]
    objs[i] = replace(objs[i], shape=shape)
    return ground_truth_views(scene.with_objects(*objs), cameras)


def missing_object(scene: Scene, cameras: Cameras, seed: int) -> Tensor | None:
    """One of two objects left out, the other exactly where it should be."""
    if scene.num_objects < 2:
        return None
    parts = object_meshes(scene)
    kept = merge_meshes([parts[seed % 2]])[0]
    return _render(kept, cameras)


def swapped_colors(scene: Scene, cameras: Cameras, seed: int) -> Tensor | None:
    """Each object wears the other's colour (``None`` where that is still a correct asset)."""
    if scene.num_objects < 2 or scene.objects[0].color == scene.objects[1].color:
        return None
    a, b = scene.objects
    if scene.relation == "next to" and (a.shape, a.size) == (b.shape, b.size):
        return None  # the swap is the mirror layout, which "next to" allows: a correct asset
    swapped = alter_scene(scene, "swapped_attributes", random.Random(seed))
    assert swapped is not None
    return ground_truth_views(swapped, cameras)


def wrong_relation(scene: Scene, cameras: Cameras, seed: int) -> Tensor | None:
    """The right objects in a visibly different relation (vertical <-> horizontal)."""
    if scene.num_objects < 2:
        return None
    rng = random.Random(seed)
    if scene.relation == "on top of":
        relation = rng.choice([r for r in RELATIONS if r != "on top of"])
    else:
        relation = "on top of"
    return ground_truth_views(scene.with_objects(*scene.objects, relation=relation), cameras)


def janus(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
    """One view (chosen by the seed) shows every object in another shape."""
    other = scene.with_objects(
        *(
            replace(o, shape=SHAPES[(SHAPES.index(o.shape) + 2) % len(SHAPES)])
            for o in scene.objects
        )
    )
    views = ground_truth_views(scene, cameras)
    k = seed % len(cameras)
    views[k] = ground_truth_views(other, cameras[k])[0]
    return views


def shifted_out(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
    """The asset slid half a frame sideways in every view (half of it out of the frame)."""
    views = ground_truth_views(scene, cameras)
    w = cameras.width
    out = torch.ones_like(views)
    step = w // 2
    if seed % 2:
        out[:, :, step:] = views[:, :, : w - step]
    else:
        out[:, :, : w - step] = views[:, :, step:]
    return out


def scaled(factor: float) -> AdversaryFn:
    """The whole asset scaled by ``factor`` about its centre."""

    def make(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
        return _transformed(scene, cameras, factor, (0.0, 0.0, 0.0))

    return make


def small_shift(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
    """The asset moved by 0.04-0.06 scene units along each axis (a few % of the frame at the
    default cameras)."""
    rng = random.Random(seed)
    shift = tuple(rng.choice((-1, 1)) * rng.uniform(0.04, 0.06) for _ in range(3))
    return _transformed(scene, cameras, 1.0, shift)


def slight_blur(scene: Scene, cameras: Cameras, seed: int) -> Tensor:
    """A Gaussian blur of 0.6 px per 64 px of image side."""
    from dreamreward.world.candidates import _gaussian_blur

    views = ground_truth_views(scene, cameras)
    return _gaussian_blur(views, 0.6 * cameras.height / 64).clamp(0, 1)


MUST_FAIL: dict[str, AdversaryFn] = {
    **{f"flat {color}": flat_frame(color) for color in COLORS},
    "noise": noise,
    "blob covering both objects": blob,
    "right colour, wrong shape": wrong_shape,
    "one object missing": missing_object,
    "swapped colours": swapped_colors,
    "wrong relation": wrong_relation,
    "janus": janus,
    "shifted half out of frame": shifted_out,
    "scaled 0.5x": scaled(0.5),
    "scaled 2x": scaled(2.0),
}
MUST_PASS: dict[str, AdversaryFn] = {
    "small shift": small_shift,
    "scaled 0.9x": scaled(0.9),
    "scaled 1.1x": scaled(1.1),
    "slight blur": slight_blur,
}
# Kinds whose scores must be low in absolute terms, not only below the ground truth.
DEGENERATE: tuple[str, ...] = (
    *(f"flat {color}" for color in COLORS),
    "noise",
    "blob covering both objects",
)


def make_adversary(kind: str, scene: Scene, cameras: Cameras, seed: int = 0) -> Tensor | None:
    """(V, H, W, 3) views in [0, 1] of adversarial ``kind`` for ``scene``, or ``None`` where the
    kind does not apply (a two-object kind for one object)."""
    table = {**MUST_FAIL, **MUST_PASS}
    if kind not in table:
        raise ValueError(f"unknown adversarial kind {kind!r}; choose from {sorted(table)}")
    views = table[kind](scene, cameras, seed)
    return None if views is None else views.clamp(0, 1)


__all__ = [
    "DEGENERATE",
    "MUST_FAIL",
    "MUST_PASS",
    "make_adversary",
]
