"""Scene -> coloured mesh: scale, place and normalise the primitives of a :class:`Scene`.

Layout conventions (world Z-up; the front camera sits on +X and sees +Y on its right):

- Each object is its unit primitive (:func:`~dreamreward.world.shapes.primitive_mesh`, inside
  [-0.5, 0.5]^3) scaled by ``SIZES[size]``. Object 1 stays at the origin; object 0 moves.
- ``"on top of"``: object 0 rests on object 1, touching (its lowest point at object 1's
  highest), centred above it in X and Y.
- Side-by-side relations keep a gap of :data:`GAP` (layout units; a medium object is 1 unit
  wide) between the bounding boxes, and both objects stand on the same ground (equal lowest Z):
  ``"left of"`` puts object 0 at -Y (left in the front view), ``"right of"`` at +Y,
  ``"in front of"`` at +X (nearer the front camera), ``"behind"`` at -X.
- ``"next to"`` is deterministic and equals ``"left of"``: object 0 at -Y, i.e. the objects
  read left-to-right in the order they are named. (An oracle should accept either side.)
- Finally the whole scene's bounding box is centred at the origin and scaled uniformly so its
  half-diagonal is ``radius`` (default 0.6: inside the NeRF cube [-1, 1]^3 and, with margin,
  inside every view of MVDream's camera distribution, whose visible half-height at the origin
  is only 0.8-1.0). Absolute size is therefore lost for one-object scenes: size words only show
  relative to the other object.
- Optional jitter (a seeded ``random.Random``) shifts object 0 by up to ``jitter_scale`` layout
  units across the relation axis and only *widens* gaps along it, so objects never intersect
  and stacked objects stay touching.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor

from dreamreward.render.mesh import Mesh
from dreamreward.world.scene import COLORS, SIZES, Scene, SceneObject
from dreamreward.world.shapes import DEFAULT_DETAIL, primitive_mesh

DEFAULT_RADIUS = 0.6
# Gap between side-by-side objects, in layout units (a medium object is 1 unit across): wide
# enough to separate the silhouettes at 64 px, small enough to read as "next to".
GAP = 0.15
DEFAULT_JITTER = 0.05

# Unit axis of object 0's displacement from object 1 for each side-by-side relation.
_SIDE_AXES: dict[str, tuple[int, float]] = {
    "next to": (1, -1.0),
    "left of": (1, -1.0),
    "right of": (1, 1.0),
    "in front of": (0, 1.0),
    "behind": (0, -1.0),
}


def _object_mesh(obj: SceneObject, detail: int) -> Mesh:
    """One object at layout scale, coloured, centred at the origin."""
    mesh = primitive_mesh(obj.shape, detail)
    vertices = mesh.vertices * SIZES[obj.size]
    colors = torch.tensor(COLORS[obj.color], dtype=vertices.dtype).expand_as(vertices).clone()
    return Mesh(vertices, mesh.faces, colors)


def _offset(
    relation: str,
    lo0: Tensor,
    hi0: Tensor,
    lo1: Tensor,
    hi1: Tensor,
    jitter: random.Random | None,
    jitter_scale: float,
) -> Tensor:
    """(3,) translation of object 0 given both (3,) bounding boxes at the origin."""
    offset = torch.zeros(3, dtype=lo0.dtype)

    def noise(low: float) -> float:
        return 0.0 if jitter is None else jitter.uniform(low, 1.0) * jitter_scale

    if relation == "on top of":
        offset[2] = hi1[2] - lo0[2]  # touching
        offset[0], offset[1] = noise(-1.0), noise(-1.0)
        return offset
    if relation not in _SIDE_AXES:
        raise ValueError(f"unknown relation {relation!r}")
    axis, sign = _SIDE_AXES[relation]
    gap = GAP + noise(0.0)  # jitter only widens the gap
    offset[axis] = hi1[axis] - lo0[axis] + gap if sign > 0 else lo1[axis] - hi0[axis] - gap
    offset[1 - axis] = noise(-1.0)
    offset[2] = lo1[2] - lo0[2]  # same ground
    return offset


def merge_meshes(
    meshes: Sequence[Mesh], object_ids: Sequence[int] | None = None
) -> tuple[Mesh, Tensor]:
    """Concatenate meshes into one.

    Args:
        meshes: K meshes; either all or none carry vertex colours.
        object_ids: the object index of each mesh (default 0..K-1).

    Returns:
        (mesh, vertex_object_index) with the index (V,) long.
    """
    if not meshes:
        raise ValueError("merge_meshes needs at least one mesh")
    ids = list(range(len(meshes))) if object_ids is None else list(object_ids)
    if len(ids) != len(meshes):
        raise ValueError(f"got {len(meshes)} meshes but {len(ids)} object_ids")
    has_colors = [m.vertex_colors is not None for m in meshes]
    if any(has_colors) and not all(has_colors):
        raise ValueError("either all meshes or none must carry vertex colours")
    offsets, faces, total = [], [], 0
    for m in meshes:
        faces.append(m.faces.long() + total)
        offsets.append(total)
        total += m.num_vertices
    colors = torch.cat([m.vertex_colors for m in meshes]) if all(has_colors) else None
    index = torch.cat(
        [
            torch.full((m.num_vertices,), i, dtype=torch.long)
            for m, i in zip(meshes, ids, strict=True)
        ]
    )
    return Mesh(torch.cat([m.vertices for m in meshes]), torch.cat(faces), colors), index


def object_meshes(
    scene: Scene,
    jitter: random.Random | None = None,
    radius: float | None = DEFAULT_RADIUS,
    detail: int = DEFAULT_DETAIL,
    jitter_scale: float = DEFAULT_JITTER,
) -> list[Mesh]:
    """Each object of ``scene`` as its own coloured mesh, placed and normalised together.

    Dropping or replacing one of them keeps the other where it was (e.g. a "missing object"
    candidate): merge the rest with :func:`merge_meshes`.

    Args:
        scene: one or two objects.
        jitter: optional seeded RNG for small placement noise (see module docstring).
        radius: half-diagonal of the whole scene's bounding box after normalisation; ``None``
            keeps layout units (the scene is still centred).
        detail: primitive tessellation (see :func:`primitive_mesh`).
        jitter_scale: largest jitter, in layout units.

    Returns:
        One :class:`Mesh` per object (vertices (V_i, 3), colours (V_i, 3) from ``COLORS``).
    """
    meshes = [_object_mesh(o, detail) for o in scene.objects]
    if scene.num_objects == 2:
        assert scene.relation is not None  # guaranteed by Scene
        bounds = [(m.vertices.min(0).values, m.vertices.max(0).values) for m in meshes]
        shift = _offset(scene.relation, *bounds[0], *bounds[1], jitter, jitter_scale)
        meshes[0] = Mesh(meshes[0].vertices + shift, meshes[0].faces, meshes[0].vertex_colors)
    all_vertices = torch.cat([m.vertices for m in meshes])
    lo, hi = all_vertices.min(0).values, all_vertices.max(0).values
    centre = (lo + hi) / 2
    scale = 1.0 if radius is None else radius / float((hi - lo).norm() / 2)
    return [Mesh((m.vertices - centre) * scale, m.faces, m.vertex_colors) for m in meshes]


def scene_mesh(
    scene: Scene,
    jitter: random.Random | None = None,
    radius: float | None = DEFAULT_RADIUS,
    detail: int = DEFAULT_DETAIL,
    jitter_scale: float = DEFAULT_JITTER,
) -> tuple[Mesh, Tensor]:
    """The whole scene as one coloured mesh (arguments as :func:`object_meshes`).

    Returns:
        mesh: vertices (V, 3) float32 with half-diagonal ``radius``, faces (F, 3), vertex
            colours (V, 3) from ``COLORS``;
        vertex_object_index: (V,) long, 0 or 1 (the object each vertex belongs to).
    """
    return merge_meshes(object_meshes(scene, jitter, radius, detail, jitter_scale))
