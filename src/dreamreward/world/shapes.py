"""Closed, outward-oriented triangle meshes of the primitive shapes.

Every shape is centred at the origin (its bounding box centre), fits the box [-0.5, 0.5]^3 and
stands along +Z (the cone's apex points up, the torus lies flat around Z). Meshes are closed
and watertight (shared vertices, every edge in exactly two faces) with faces counter-clockwise
seen from outside, so normals point outwards and the signed volume is positive.

All round shapes are surfaces of revolution of a 2D profile ``(rho, z)`` around Z; a profile
point with ``rho = 0`` becomes a single pole vertex (sphere poles, cap centres, cone apex).
The cube is six ``n x n`` grids with merged edge vertices.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from dreamreward.render.mesh import Mesh
from dreamreward.world.scene import SHAPES

DEFAULT_DETAIL = 24
MIN_DETAIL = 8

# Torus: the tube radius (0.16) is nearly a third of the outer radius (0.5) so the ring still
# reads as a solid donut from the side (0-30 degrees elevation) instead of a thin wire; the hole
# (radius 0.34 - 0.16 = 0.18) shows from above.
TORUS_TUBE_RADIUS = 0.16
TORUS_RING_RADIUS = 0.5 - TORUS_TUBE_RADIUS


def _revolve(profile: np.ndarray, segments: int, closed: bool = False) -> tuple[np.ndarray, ...]:
    """Revolve a (rho, z) profile around Z.

    Args:
        profile: (P, 2) points. For an open profile the first and last points must lie on the
            axis (rho = 0) and the profile runs from top to bottom; the outward side is then on
            the +rho side of travel. A closed profile (``closed=True``, no axis points) must run
            clockwise in the (rho, z) plane for the same reason.
        segments: vertices around Z per ring.

    Returns:
        vertices (V, 3) float64, faces (F, 3) int64, counter-clockwise seen from outside.
    """
    phi = np.arange(segments) * (2.0 * math.pi / segments)
    cos, sin = np.cos(phi), np.sin(phi)
    vertices: list[np.ndarray] = []
    ring_ids: list[np.ndarray] = []  # per profile point: (segments,) vertex ids (a pole repeats)
    count = 0
    for rho, z in profile:
        if rho == 0.0:
            vertices.append(np.array([[0.0, 0.0, z]]))
            ring_ids.append(np.full(segments, count))
            count += 1
        else:
            vertices.append(np.stack([rho * cos, rho * sin, np.full(segments, z)], axis=1))
            ring_ids.append(count + np.arange(segments))
            count += segments
    faces: list[np.ndarray] = []
    bands = len(profile) if closed else len(profile) - 1
    for k in range(bands):
        up, lo = ring_ids[k], ring_ids[(k + 1) % len(profile)]
        up_next, lo_next = np.roll(up, -1), np.roll(lo, -1)
        # Quad (up_j, lo_j, lo_j+1, up_j+1) is counter-clockwise seen from outside. At a pole
        # one of its two triangles collapses (up_j == up_j+1 or lo_j == lo_j+1): drop it.
        if profile[(k + 1) % len(profile)][0] != 0.0:
            faces.append(np.stack([up, lo, lo_next], axis=1))
        if profile[k][0] != 0.0:
            faces.append(np.stack([up, lo_next, up_next], axis=1))
    return np.concatenate(vertices), np.concatenate(faces).astype(np.int64)


def _sphere(detail: int) -> tuple[np.ndarray, np.ndarray]:
    rings = max(4, detail // 2)
    theta = np.arange(rings + 1) * (math.pi / rings)
    profile = np.stack([0.5 * np.sin(theta), 0.5 * np.cos(theta)], axis=1)
    profile[0, 0] = profile[-1, 0] = 0.0  # exact poles
    return _revolve(profile, detail)


def _cylinder(detail: int) -> tuple[np.ndarray, np.ndarray]:
    # Inner cap rings and a side ring at mid-height avoid long sliver triangles.
    profile = np.array(
        [[0.0, 0.5], [0.25, 0.5], [0.5, 0.5], [0.5, 0.0], [0.5, -0.5], [0.25, -0.5], [0.0, -0.5]]
    )
    return _revolve(profile, detail)


def _cone(detail: int) -> tuple[np.ndarray, np.ndarray]:
    profile = np.array([[0.0, 0.5], [0.25, 0.0], [0.5, -0.5], [0.25, -0.5], [0.0, -0.5]])
    return _revolve(profile, detail)


def _torus(detail: int) -> tuple[np.ndarray, np.ndarray]:
    minor = max(8, detail // 2)
    # Clockwise in (rho, z): start at the outer equator and go down first.
    a = -np.arange(minor) * (2.0 * math.pi / minor)
    profile = np.stack(
        [TORUS_RING_RADIUS + TORUS_TUBE_RADIUS * np.cos(a), TORUS_TUBE_RADIUS * np.sin(a)], axis=1
    )
    return _revolve(profile, detail, closed=True)


# Cube faces as (normal, u, v) with u x v = normal, so grid quads in (u, v) order face outwards.
_CUBE_FACES = (
    ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
    ((0, 1, 0), (0, 0, 1), (1, 0, 0)),
    ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
    ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
    ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
)


def _cube(detail: int) -> tuple[np.ndarray, np.ndarray]:
    n = max(1, detail // 8)  # grid cells per side: a few, so face-level edits stay local
    t = np.linspace(-0.5, 0.5, n + 1)
    a, b = np.meshgrid(t, t, indexing="ij")  # (n+1, n+1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    q00, q10, q11, q01 = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    grid_faces = np.concatenate(
        [np.stack([q00, q10, q11], -1).reshape(-1, 3), np.stack([q00, q11, q01], -1).reshape(-1, 3)]
    )
    verts, faces = [], []
    for k, (normal, u, v) in enumerate(_CUBE_FACES):
        pts = 0.5 * np.array(normal) + a[..., None] * np.array(u) + b[..., None] * np.array(v)
        verts.append(pts.reshape(-1, 3))
        faces.append(grid_faces + k * (n + 1) ** 2)
    # Merge the duplicated edge/corner vertices so the mesh is watertight by index.
    merged, inverse = np.unique(np.round(np.concatenate(verts), 9), axis=0, return_inverse=True)
    return merged, inverse.reshape(-1)[np.concatenate(faces)]


_BUILDERS = {
    "sphere": _sphere,
    "cube": _cube,
    "cone": _cone,
    "cylinder": _cylinder,
    "torus": _torus,
}
assert set(_BUILDERS) == set(SHAPES), "every shape in scene.SHAPES needs a builder"


@lru_cache(maxsize=64)
def _cached(shape: str, detail: int) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, faces = _BUILDERS[shape](detail)
    # Centre the bounding box exactly (the cone's and sphere's are symmetric already; this guards
    # against rounding and odd ``detail``).
    vertices = vertices - (vertices.min(0) + vertices.max(0)) / 2
    return (
        torch.as_tensor(vertices, dtype=torch.float32),
        torch.as_tensor(faces, dtype=torch.long),
    )


def primitive_mesh(shape: str, detail: int = DEFAULT_DETAIL) -> Mesh:
    """The closed unit mesh of one primitive shape (no vertex colours).

    Face counts at the default detail (24): sphere 528, cube 108, cone 144, cylinder 240,
    torus 576. Results are cached per (shape, detail); each call returns fresh tensors, so
    callers may modify them in place.

    Args:
        shape: one of :data:`dreamreward.world.scene.SHAPES`.
        detail: segments around Z (>= 8; multiples of 4 reach the box exactly along X and Y).
            Rings along the profile scale with it; the cube uses ``detail // 8`` cells per side.

    Returns:
        Mesh with vertices (V, 3) float32 inside [-0.5, 0.5]^3 and faces (F, 3) long.

    Raises:
        ValueError: unknown shape or too small ``detail``.
    """
    if shape not in _BUILDERS:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")
    if not isinstance(detail, int) or detail < MIN_DETAIL:
        raise ValueError(f"detail must be an int >= {MIN_DETAIL}, got {detail!r}")
    vertices, faces = _cached(shape, detail)
    return Mesh(vertices.clone(), faces.clone())
