"""Candidate assets for a prompt: the correct scene and the failures a text-to-3D generator makes.

Every candidate is rendered from the same 4 cameras. Content failures change the scene
(wrong colour or shape, a missing object, swapped attributes, a wrong relation); fidelity
failures degrade the correct renders in image space (blur, noise, floaters, holes, washed-out
colour); a Janus candidate shows a different object in one view; partial geometry cuts part of
the mesh away.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.render.cameras import Cameras
from dreamreward.render.image_ops import gaussian_blur
from dreamreward.render.mesh import Mesh
from dreamreward.world.layout import scene_mesh
from dreamreward.world.prompts import is_novel
from dreamreward.world.scene import COLORS, RELATIONS, SHAPES, Scene
from dreamreward.world.views import render_views

CONTENT_DEFECTS: tuple[str, ...] = (
    "wrong_color",
    "wrong_shape",
    "missing_object",
    "swapped_attributes",
    "wrong_relation",
)
DEFECTS: tuple[str, ...] = (
    "none",
    *CONTENT_DEFECTS,
    "low_fidelity",
    "janus",
    "partial_geometry",
)
FIDELITY_KINDS: tuple[str, ...] = ("blur", "noise", "floaters", "holes", "washed_out")

# Which relations a wrong-relation candidate may swap. Primitives are symmetric about Z and the
# dataset's cameras have a random azimuth offset, so every horizontal relation (left/right of,
# in front of, behind, next to) is a rotation of every other: a "wrong" horizontal relation would
# be the correct asset seen from another angle. Only vertical <-> horizontal is a visible error.
_RELATION_FAMILY = {
    "on top of": "vertical",
    "next to": "horizontal",
    "left of": "horizontal",
    "right of": "horizontal",
    "in front of": "horizontal",
    "behind": "horizontal",
}


@dataclass(frozen=True)
class Candidate:
    """One candidate asset for a prompt.

    Attributes:
        asset_id: unique id (``<prompt_id>_<k>``).
        scene: the scene the asset depicts (for content defects, the altered scene).
        defect: one of :data:`DEFECTS`.
        fidelity_kind: for ``low_fidelity``, one of :data:`FIDELITY_KINDS`.
        severity: for ``low_fidelity`` and ``partial_geometry``, in [0, 1].
        janus_view: for ``janus``, the view (0..3) showing ``janus_scene``.
        janus_scene: for ``janus``, the other object's scene.
        seed: seed of any randomness in rendering the defect.
    """

    asset_id: str
    scene: Scene
    defect: str
    fidelity_kind: str | None = None
    severity: float = 0.0
    janus_view: int | None = None
    janus_scene: Scene | None = None
    seed: int = 0


def _other(options: tuple[str, ...] | list[str], current: str, rng: random.Random) -> str:
    return rng.choice([o for o in options if o != current])


def alter_scene(scene: Scene, defect: str, rng: random.Random) -> Scene | None:
    """The scene a content defect depicts, or ``None`` when the defect cannot apply."""
    objs = list(scene.objects)
    if defect == "wrong_color":
        i = rng.randrange(len(objs))
        taken = {o.color for o in objs}
        objs[i] = replace(objs[i], color=rng.choice([c for c in COLORS if c not in taken]))
        return scene.with_objects(*objs)
    if defect == "wrong_shape":
        i = rng.randrange(len(objs))
        objs[i] = replace(objs[i], shape=_other(SHAPES, objs[i].shape, rng))
        return scene.with_objects(*objs)
    if len(objs) < 2:
        return None
    if defect == "missing_object":
        return Scene((objs[rng.randrange(2)],))
    if defect == "swapped_attributes":
        a, b = objs
        if a.color == b.color:
            return None
        return scene.with_objects(replace(a, color=b.color), replace(b, color=a.color))
    if defect == "wrong_relation":
        family = _RELATION_FAMILY[scene.relation or ""]
        choices = [r for r in RELATIONS if _RELATION_FAMILY[r] != family]
        return scene.with_objects(*objs, relation=rng.choice(choices))
    raise ValueError(f"not a content defect: {defect!r}")


def make_candidates(
    scene: Scene,
    prompt_id: str,
    num_candidates: int,
    rng: random.Random,
    allow_novel: bool = True,
) -> list[Candidate]:
    """The correct asset plus ``num_candidates - 1`` distinct failures (4-10 as in 3DRewardDB).

    Defect types are drawn without replacement first (so a prompt shows a variety), then with
    replacement for fidelity failures of different kinds and severities.

    Args:
        allow_novel: whether failures may depict held-out (novel) compositions. Training prompts
            pass False so no held-out colour-shape or shape-shape pairing is ever seen in
            training, not even as a negative.
    """
    if not 2 <= num_candidates <= 12:
        raise ValueError(f"num_candidates must be in [2, 12], got {num_candidates}")
    out = [Candidate(f"{prompt_id}_0", scene, "none", seed=rng.randrange(2**31))]
    pool = [d for d in DEFECTS if d != "none"]
    rng.shuffle(pool)
    seen: set[tuple] = set()
    attempts = 0
    while len(out) < num_candidates and attempts < 200:
        attempts += 1
        defect = (
            pool.pop()
            if pool
            else rng.choice(
                ("low_fidelity", "low_fidelity", "janus", "partial_geometry", "wrong_color")
            )
        )
        k = len(out)
        cand = _make(scene, defect, f"{prompt_id}_{k}", rng)
        if cand is None:
            continue
        if not allow_novel and any(
            s is not None and is_novel(s) for s in (cand.scene, cand.janus_scene)
        ):
            continue
        key = (cand.scene, cand.defect, cand.fidelity_kind, cand.janus_scene)
        if key in seen and cand.defect != "low_fidelity":
            continue
        seen.add(key)
        out.append(cand)
    return out


def _make(scene: Scene, defect: str, asset_id: str, rng: random.Random) -> Candidate | None:
    seed = rng.randrange(2**31)
    if defect in CONTENT_DEFECTS:
        altered = alter_scene(scene, defect, rng)
        if altered is None or altered == scene:
            return None
        return Candidate(asset_id, altered, defect, seed=seed)
    if defect == "low_fidelity":
        return Candidate(
            asset_id,
            scene,
            defect,
            fidelity_kind=rng.choice(FIDELITY_KINDS),
            severity=rng.uniform(0.35, 1.0),
            seed=seed,
        )
    if defect == "janus":
        # Every object changes shape in the odd view, so it is clearly another object.
        other = scene.with_objects(
            *(replace(o, shape=_other(SHAPES, o.shape, rng)) for o in scene.objects)
        )
        return Candidate(
            asset_id, scene, defect, janus_view=rng.randrange(4), janus_scene=other, seed=seed
        )
    if defect == "partial_geometry":
        return Candidate(asset_id, scene, defect, severity=rng.uniform(0.2, 0.45), seed=seed)
    raise ValueError(f"unknown defect {defect!r}")


# ---------------------------------------------------------------------------- rendering
def render_candidate(candidate: Candidate, cameras: Cameras) -> Tensor:
    """Render a candidate from ``cameras`` (4 views): (4, H, W, 3) in [0, 1], white background."""
    gen = torch.Generator().manual_seed(candidate.seed)
    mesh, _ = scene_mesh(candidate.scene)
    if candidate.defect == "partial_geometry":
        mesh = _cut(mesh, candidate.severity, gen)
    out = render_views(mesh, cameras)
    rgb, mask = out["rgb"], out["mask"]
    if candidate.defect == "janus":
        assert candidate.janus_scene is not None and candidate.janus_view is not None
        other, _ = scene_mesh(candidate.janus_scene)
        k = candidate.janus_view
        rgb = rgb.clone()
        rgb[k] = render_views(other, cameras[k])["rgb"][0]
    if candidate.defect == "low_fidelity":
        rgb = degrade(rgb, mask, candidate.fidelity_kind or "blur", candidate.severity, gen)
    return rgb.clamp(0, 1)


def _cut(mesh: Mesh, severity: float, gen: torch.Generator) -> Mesh:
    """Remove the faces on one side of a random plane: a ``severity`` fraction of the extent."""
    direction = F.normalize(torch.randn(3, generator=gen), dim=0)
    heights = mesh.vertices @ direction
    lo, hi = float(heights.min()), float(heights.max())
    cut = hi - severity * (hi - lo)
    keep = (heights[mesh.faces] < cut).all(dim=1)
    if not bool(keep.any()):
        keep[0] = True
    colors = mesh.vertex_colors
    return Mesh(mesh.vertices, mesh.faces[keep], colors)


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """(N, H, W, C) separable Gaussian blur (the kernel half width ``int(3 sigma)``, as the
    primitives sets were built with)."""
    blurred = gaussian_blur(images.permute(0, 3, 1, 2), sigma, radius=max(1, int(3 * sigma)))
    return blurred.permute(0, 2, 3, 1)


def degrade(rgb: Tensor, mask: Tensor, kind: str, severity: float, gen: torch.Generator) -> Tensor:
    """Image-space fidelity failures of a generator.

    Args:
        rgb: (N, H, W, 3) renders on white; mask: (N, H, W, 1) coverage.
        kind: one of :data:`FIDELITY_KINDS`.
        severity: in [0, 1].
    """
    n, h, w, _ = rgb.shape
    if kind == "blur":
        return _gaussian_blur(rgb, 0.6 + 2.4 * severity * h / 64)
    if kind == "noise":
        return rgb + (0.08 + 0.25 * severity) * torch.randn(rgb.shape, generator=gen) * mask
    if kind == "washed_out":
        grey = rgb.mean(dim=-1, keepdim=True)
        faded = rgb + (0.55 * severity + 0.25) * (0.5 * grey + 0.5 - rgb)
        return faded * mask + rgb * (1 - mask)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = rgb.clone()
    count = 2 + int(6 * severity)
    for i in range(n):
        for _ in range(count):
            if kind == "floaters":  # coloured blobs floating in the background
                cy, cx = (torch.rand(2, generator=gen) * torch.tensor([h, w])).tolist()
                r = (0.03 + 0.05 * severity) * h
                color = torch.rand(3, generator=gen) * 0.8
            elif kind == "holes":  # white holes inside the object
                inside = mask[i, ..., 0].nonzero()
                if len(inside) == 0:
                    break
                cy, cx = inside[torch.randint(len(inside), (1,), generator=gen)][0].tolist()
                r = (0.03 + 0.04 * severity) * h
                color = torch.ones(3)
            else:
                raise ValueError(f"unknown fidelity failure {kind!r}; choose from {FIDELITY_KINDS}")
            disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)[..., None]
            out[i] = torch.where(disk, color, out[i])
    return out
