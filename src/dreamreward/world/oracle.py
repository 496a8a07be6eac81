"""The oracle: the expert annotator of the primitives world, and the oracle score of any asset.

Two functions with different jobs:

- :func:`annotate` rates *candidates* whose defects are known (the preference set's labels):
  1-6 ratings for alignment, fidelity and consistency, an overall score and a ranking with ties,
  by written rules (``data_cards/primitives_preferences.md``).
- :func:`oracle_score` judges *any* 4-view render (an optimised NeRF, a sampled image...)
  against the prompt's ground-truth scene rendered from the same cameras: the right shapes, the
  right colours on the right objects in the right places, the same object in every view. This
  is what the diffusion prior and DreamFL are evaluated by. Small shifts and scale changes are
  forgiven within a stated tolerance, beyond it they count; degenerate views (empty, a frame
  filled with one colour, noise) score about 0 and are named by :func:`degeneracy`. The rules
  are in :class:`OracleScore` and ``data_cards/primitives_preferences.md``; the adversarial set
  that keeps them honest is :mod:`dreamreward.world.adversarial`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.render.cameras import Cameras
from dreamreward.world.candidates import Candidate
from dreamreward.world.layout import scene_mesh
from dreamreward.world.scene import COLORS, Scene
from dreamreward.world.views import ground_truth_views, render_views

# ----------------------------------------------------------------------------- annotation
# (alignment, fidelity, consistency) per defect, before severity adjustments.
_RULES: dict[str, tuple[int, int, int]] = {
    "none": (6, 6, 6),
    "wrong_color": (3, 6, 6),
    "wrong_shape": (2, 6, 6),
    "missing_object": (2, 6, 6),
    "swapped_attributes": (3, 6, 6),
    "wrong_relation": (4, 6, 6),
    "low_fidelity": (5, 4, 6),
    "janus": (4, 5, 2),
    "partial_geometry": (4, 3, 4),
}
OVERALL_WEIGHTS = {"alignment": 0.5, "fidelity": 0.25, "consistency": 0.25}


@dataclass(frozen=True)
class Ratings:
    """1-6 ratings of one asset and its overall score (weighted mean, in [1, 6])."""

    alignment: int
    fidelity: int
    consistency: int
    overall: float


def rate(candidate: Candidate) -> Ratings:
    """Rate one candidate by the rules in the data card."""
    if candidate.defect not in _RULES:
        raise ValueError(f"unknown defect {candidate.defect!r}")
    alignment, fidelity, consistency = _RULES[candidate.defect]
    if candidate.defect == "low_fidelity":
        # fidelity 5 - round(1 + 2 s): s < 0.75 -> 3, heavier -> 2; a heavy failure also hurts
        # recognisability
        fidelity = 5 - round(1 + 2 * candidate.severity)
        alignment = 5 if candidate.severity < 0.75 else 4
    if candidate.defect == "partial_geometry" and candidate.severity > 0.35:
        fidelity, alignment = 2, 3
    overall = (
        OVERALL_WEIGHTS["alignment"] * alignment
        + OVERALL_WEIGHTS["fidelity"] * fidelity
        + OVERALL_WEIGHTS["consistency"] * consistency
    )
    return Ratings(alignment, fidelity, consistency, round(overall, 4))


def rank(ratings: list[Ratings]) -> list[int]:
    """Competition ranks by overall score (1 = best; equal scores share a rank)."""
    scores = [r.overall for r in ratings]
    return [1 + sum(other > s for other in scores) for s in scores]


def annotate(candidates: list[Candidate]) -> tuple[list[Ratings], list[int]]:
    """Ratings and ranks of one prompt's candidates."""
    ratings = [rate(c) for c in candidates]
    return ratings, rank(ratings)


# ----------------------------------------------------------------------------- oracle score
_PALETTE_NAMES = tuple(COLORS)
_PALETTE = torch.tensor([COLORS[n] for n in _PALETTE_NAMES])  # (K, 3)

# The comparison's tolerance: within it an asset is moved onto the ground truth before the
# comparison (a generator need not hit the exact placement); beyond it the difference counts.
MAX_SHIFT = 0.08  # centroid shift forgiven, as a fraction of the frame's side (per axis)
MAX_SCALE = 1.25  # size ratio forgiven, either way (a 2x asset keeps a 1.6x error)
# Relative placement of two objects: the offset between their centroids may differ from the
# ground truth's by RELATION_SIGMA of the frame's side for a factor exp(-1).
RELATION_SIGMA = 0.15
# Overlaps (see _overlap) below NO_CREDIT earn nothing, from FULL_CREDIT everything.
NO_CREDIT = 0.5
FULL_CREDIT = 1.0
# The asset's score weighs its worst view this much (a Janus asset shows a wrong object in one).
MIN_WEIGHT = 0.5
# A pixel whose shaded fit to its nearest named colour leaves more than this is a mixed edge.
MIXED_RESIDUAL = 0.12
# A pixel is foreground from FOREGROUND_FLOOR darker than the background, fully from
# FOREGROUND_FLOOR + FOREGROUND_RAMP (see foreground_mask).
FOREGROUND_FLOOR = 0.05
FOREGROUND_RAMP = 0.10
# An object shows in a view of the ground truth with at least this many pixels (at 64 px);
# a smaller sliver (the object hidden behind the other) weighs less in binding and relation.
VISIBLE_PIXELS = 20
# Views are judged at this size (pixels, longer side), whatever size they come in.
JUDGING_SIZE = 64


@dataclass
class OracleScore:
    """The oracle's judgement of one 4-view asset; every score in [0, 1].

    Both the asset and the ground truth (the prompt's scene rendered by the world's renderer
    from the same cameras) are read the same way: a foreground mask, and each foreground
    pixel's named colour (:func:`palette_labels`). Per view, the asset is laid over the ground
    truth either as it is or moved and scaled towards it within the tolerance
    (:data:`MAX_SHIFT`, :data:`MAX_SCALE`), whichever fits better, then:

    - ``shape``: the overlap of the silhouettes (:func:`_overlap`: IoU, half-forgiving of a
      one-pixel edge);
    - ``binding``: for each colour the prompt names, the overlap of the asset's pixels of that
      colour with the ground truth's -- the right colour on the right object, with the right
      shape, in the right place; the mean over the prompt's colours, so a missing or
      recoloured object costs its share (a colour the ground truth shows with fewer than
      :data:`VISIBLE_PIXELS` pixels in a view, behind the other object, weighs less there);
    - ``relation``: with two objects of different colours, ``exp(-(e / 0.15 W)^2)`` for the
      error ``e`` between the asset's and the ground truth's offset from one object's
      centroid to the other's (1 with one object, two of one colour, or where one object
      hides all but :data:`VISIBLE_PIXELS` of the other in the ground truth's view; 0 where
      the asset lacks one of them);
    - the view's score is ``credit(shape) * credit(binding) * relation`` where ``credit`` maps
      an overlap of 0.5 or less to 0 and 1 to 1, linearly: a view that fails on any axis
      scores low whatever the others say, and half an overlap earns nothing.

    "next to" names no side: the better of the two mirror layouts counts
    (:func:`acceptable_layouts`). The ground truth scores exactly 1.

    Attributes:
        total: the headline score, ``0.5 * mean(per_view) + 0.5 * min(per_view)`` (a view
            that shows something else, as in a Janus asset, costs more than its share).
        shape, binding, relation: the means over views of the terms above.
        color: diagnostic only (not in ``total``): palette-histogram intersection of the
            foregrounds, i.e. "are the right colours there at all", wherever they are.
        per_view: (V,) per-view scores.
        degenerate: ``None``, or why the views are not an asset at all (see
            :func:`degeneracy`); such views score near 0 by the rules above anyway.
    """

    total: float
    shape: float
    color: float
    binding: float
    relation: float
    per_view: Tensor
    degenerate: str | None = None


def foreground_mask(rgb: Tensor, threshold: float = 0.12, floor: float = 0.0) -> Tensor:
    """(N, H, W, 3) images on a light background -> (N, H, W) soft foreground in [0, 1].

    The background colour is each view's median border pixel (pure white for the world's own
    renders, which never touch the border; a diffusion sample's background is often an
    off-white, a little noisy): a pixel is foreground as far as it is darker than that, in
    any channel, from ``floor`` (nothing) to ``floor + threshold`` (all). The pixel's own
    darkness is measured against the lighter of the two, so a white object on a grey-ish
    background still shows.
    """
    border = torch.cat(
        [rgb[:, 0], rgb[:, -1], rgb[:, 1:-1, 0], rgb[:, 1:-1, -1]], dim=1
    )  # (N, 2W + 2(H - 2), 3)
    background = border.median(dim=1).values.clamp_max(1.0)  # (N, 3)
    # only a light background is one: a view whose border is object (dark) keeps pure white
    light = background.amin(dim=-1, keepdim=True) > 0.6
    background = torch.where(light, background, torch.ones_like(background))
    distance = (background[:, None, None, :] - rgb).clamp_min(0).amax(dim=-1)
    return ((distance - floor) / threshold).clamp(0, 1)


def _solid_foreground(rgb: Tensor) -> Tensor:
    """The foreground the oracle compares: :func:`foreground_mask` with a floor, so the faint
    halo of a soft-edged sample (a pixel 10% object, 90% background) does not widen the
    silhouette, as it does not in the ground truth's crisp render."""
    return foreground_mask(rgb, threshold=FOREGROUND_RAMP, floor=FOREGROUND_FLOOR)


def palette_labels(rgb: Tensor, min_shade: float = 0.35) -> Tensor:
    """Label each pixel with its nearest named colour, allowing for shading.

    For each palette colour ``a`` the best shading factor ``s = clamp(p.a / a.a, min_shade, 1.05)``
    is fitted and the residual ``|p - s a|`` compared.

    Args:
        rgb: (..., 3).

    Returns:
        (...,) long index into :data:`COLORS` order.
    """
    return _palette_fit(rgb, min_shade)[1]


def _palette_fit(rgb: Tensor, min_shade: float = 0.35) -> tuple[Tensor, Tensor]:
    """(..., 3) -> the residual (...,) of the best shaded fit and its colour index (...,)."""
    palette = _PALETTE.to(rgb)
    dots = rgb @ palette.t()  # (..., K)
    scale = (dots / (palette * palette).sum(-1)).clamp(min_shade, 1.05)
    residual = (rgb[..., None, :] - scale[..., None] * palette).norm(dim=-1)
    return residual.min(dim=-1)


def _moments(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(N, H, W) -> centroid (N, 2) in pixels (x, y) and area (N,)."""
    n, h, w = mask.shape
    ys = torch.arange(h, dtype=mask.dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=mask.dtype).view(1, 1, w)
    area = mask.sum(dim=(1, 2)).clamp_min(1e-6)
    cx = (mask * xs).sum(dim=(1, 2)) / area
    cy = (mask * ys).sum(dim=(1, 2)) / area
    return torch.stack([cx, cy], dim=-1), area


def _align(
    images: Tensor,
    src_mask: Tensor,
    dst_mask: Tensor,
    max_shift: float | None = None,
    max_scale: float = 2.0,
) -> Tensor:
    """Warp ``images`` (N, C, H, W) so ``src_mask``'s centroid and area match ``dst_mask``'s.

    The scale is limited to ``[1 / max_scale, max_scale]`` and, with ``max_shift``, the
    centroid's move to ``max_shift`` of the frame's side per axis: beyond that, the asset is
    moved and scaled only as far as the tolerance allows.
    """
    n, _, h, w = images.shape
    c_src, a_src = _moments(src_mask)
    c_dst, a_dst = _moments(dst_mask)
    scale = (a_src / a_dst).sqrt().clamp(1 / max_scale, max_scale)  # >1 shrinks the source
    if max_shift is not None:
        limit = torch.tensor([max_shift * w, max_shift * h])
        c_dst = c_src + (c_dst - c_src).clamp(-limit, limit)
    to_ndc = torch.tensor([2.0 / w, 2.0 / h])
    c_src_ndc = (c_src + 0.5) * to_ndc - 1
    c_dst_ndc = (c_dst + 0.5) * to_ndc - 1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = c_src_ndc - scale[:, None] * c_dst_ndc
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _soft_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N, H, W) x2 -> (N,); 1 when both are empty."""
    inter = torch.minimum(a, b).sum(dim=(1, 2))
    union = torch.maximum(a, b).sum(dim=(1, 2))
    return torch.where(union > 1e-6, inter / union.clamp_min(1e-6), torch.ones_like(union))


def _colour_regions(rgb: Tensor, mask: Tensor) -> Tensor:
    """(N, H, W, 3) images and their (N, H, W) foreground -> (N, H, W, K) soft foreground of
    each named colour (K = len(COLORS)).

    A pixel that no named colour explains well (residual of the shaded fit above
    :data:`MIXED_RESIDUAL`: an antialiased or blurred edge mixing the object with the
    background or with the other object) takes the colour its 3x3 neighbourhood shows most
    clearly (each neighbour's vote weighted by how well its colour fits it), twice over, so a
    soft edge up to two pixels wide does not read as a third colour.
    """
    residual, labels = _palette_fit(rgb)
    k = len(_PALETTE_NAMES)
    # how clearly a pixel shows its colour: 1 for an exact shaded fit, 0 from MIXED_RESIDUAL
    clarity = (1 - residual / MIXED_RESIDUAL).clamp_min(0)
    for _ in range(2):
        votes = (F.one_hot(labels, k).float() * clarity[..., None]).permute(0, 3, 1, 2)
        near = F.avg_pool2d(votes, 3, stride=1, padding=1)  # (N, K, H, W) summed clarity / 9
        take = (clarity <= 0) & (near.amax(dim=1) > 0)
        labels = torch.where(take, near.argmax(dim=1), labels)
        clarity = torch.where(take, near.amax(dim=1), clarity)
    return F.one_hot(labels, k).float() * mask[..., None]


def _dilate(mask: Tensor) -> Tensor:
    """(N, H, W) -> (N, H, W): the max over each pixel's 3x3 neighbourhood."""
    return F.max_pool2d(mask[:, None], 3, stride=1, padding=1)[:, 0]


def _overlap(a: Tensor, b: Tensor) -> Tensor:
    """Agreement of two soft regions (N, H, W) -> (N,) in [0, 1]: 1 when both are empty, 0
    when only one is.

    The mean of their IoU and of an F1 score that forgives one pixel (the harmonic mean of the
    share of ``a`` within a pixel of ``b`` and the share of ``b`` within a pixel of ``a``).
    The forgiving half keeps antialiasing, a slight blur or another renderer's rasterisation
    from costing much; the strict half keeps a cube apart from a cylinder, whose silhouettes
    differ by a pixel or two at 64 px.
    """
    mass_a, mass_b = a.sum(dim=(1, 2)), b.sum(dim=(1, 2))
    # min, not a product: a soft region lies wholly within a pixel of itself
    precision = torch.minimum(a, _dilate(b)).sum(dim=(1, 2)) / mass_a.clamp_min(1e-6)
    recall = torch.minimum(b, _dilate(a)).sum(dim=(1, 2)) / mass_b.clamp_min(1e-6)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-6)
    overlap = 0.5 * (f1 + _soft_iou(a, b))
    empty_a, empty_b = mass_a < 0.5, mass_b < 0.5
    return torch.where(
        empty_a & empty_b,
        torch.ones_like(overlap),
        torch.where(empty_a | empty_b, torch.zeros_like(overlap), overlap),
    )


def _credit(overlap: Tensor) -> Tensor:
    """Map an overlap in [0, 1] to credit: none below :data:`NO_CREDIT`, full from
    :data:`FULL_CREDIT`, linear between (an asset half right is not half as good)."""
    return ((overlap - NO_CREDIT) / (FULL_CREDIT - NO_CREDIT)).clamp(0, 1)


def _centroid_offsets(
    regions: Tensor, colors: list[int], min_pixels: float
) -> tuple[Tensor, Tensor]:
    """Offset (N, 2) between the centroids of two colour regions (x, y pixels) and whether
    both are present (N,) bool (each with at least ``min_pixels`` pixels' worth of mass)."""
    c0, a0 = _moments(regions[..., colors[0]])
    c1, a1 = _moments(regions[..., colors[1]])
    return c0 - c1, (a0 >= min_pixels) & (a1 >= min_pixels)


@dataclass
class _Terms:
    """Per-view terms (each (V,)) of an asset against one ground-truth layout."""

    shape: Tensor
    binding: Tensor
    relation: Tensor

    @property
    def per_view(self) -> Tensor:
        return _credit(self.shape) * _credit(self.binding) * self.relation

    @property
    def total(self) -> Tensor:
        return (1 - MIN_WEIGHT) * self.per_view.mean() + MIN_WEIGHT * self.per_view.min()


def _compare(
    views: Tensor, mask: Tensor, ref_mask: Tensor, ref_regions: Tensor, scene: Scene
) -> _Terms:
    """Judge (V, H, W, 3) ``views`` with foreground ``mask`` (V, H, W) against one ground-truth
    layout of ``scene``, read as its foreground ``ref_mask`` (V, H, W) and colour regions
    ``ref_regions`` (V, H, W, K)."""
    v, h, w, _ = views.shape
    stacked = torch.cat([mask[:, None], views.permute(0, 3, 1, 2)], dim=1)  # (V, 4, H, W)
    # Two ways to lay the asset over the truth, the better per view (ties: as it is): as it is,
    # or moved and scaled towards the truth within the tolerance.
    placements = torch.stack(
        [stacked, _align(stacked, mask, ref_mask, max_shift=MAX_SHIFT, max_scale=MAX_SCALE)]
    )  # (2, V, 4, H, W)
    fits = torch.stack([_overlap(p[:, 0], ref_mask) for p in placements])  # (2, V)
    best = fits.argmax(dim=0)
    placed = placements[best, torch.arange(v)]  # (V, 4, H, W)
    shape = fits[best, torch.arange(v)]
    p_mask, p_rgb = placed[:, 0], placed[:, 1:].permute(0, 2, 3, 1)
    regions = _colour_regions(p_rgb, p_mask)
    colors = sorted({_PALETTE_NAMES.index(o.color) for o in scene.objects})
    per_color = torch.stack([_overlap(regions[..., c], ref_regions[..., c]) for c in colors])
    # a colour the ground truth shows as a sliver in this view (an object hidden behind the
    # other) weighs less: a few pixels cannot be matched reliably
    shown = torch.stack([ref_regions[..., c].sum(dim=(1, 2)) for c in colors])  # (C, V)
    weight = (shown / VISIBLE_PIXELS).clamp(1e-3, 1)
    binding = (per_color * weight).sum(dim=0) / weight.sum(dim=0)
    relation = torch.ones(v)
    if scene.num_objects == 2 and len(colors) == 2:
        order = [_PALETTE_NAMES.index(o.color) for o in scene.objects]
        offset, present = _centroid_offsets(regions, order, min_pixels=4)
        # a sliver of an object mostly hidden behind the other has no reliable centroid
        ref_offset, ref_present = _centroid_offsets(ref_regions, order, VISIBLE_PIXELS)
        error = (offset - ref_offset).norm(dim=-1) / (RELATION_SIGMA * max(h, w))
        placed_right = torch.where(present, torch.exp(-(error**2)), torch.zeros_like(error))
        # where one object (nearly) hides the other in the truth, the view cannot show it
        relation = torch.where(ref_present, placed_right, torch.ones_like(error))
    return _Terms(shape, binding, relation)


def acceptable_layouts(scene: Scene) -> list[Scene]:
    """The ground-truth scenes an asset of ``scene`` may match: the scene itself, and for
    "next to" (which names no side; the world lays it out as "left of") the mirror image."""
    if scene.relation == "next to":
        return [scene, scene.with_objects(*scene.objects, relation="right of")]
    return [scene]


@torch.no_grad()
def degeneracy(views: Tensor) -> str | None:
    """Why ``views`` (V, H, W, 3) in [0, 1] are not an asset at all, or ``None``.

    - ``"empty"``: less than 0.2% of the pixels are clearly foreground;
    - ``"fills the frame"``: more than 80% are (a flat colour, a frame-filling blob);
    - ``"noise"``: the mean absolute difference from a 3x3 box blur exceeds 0.08 (white
      renders of objects stay below 0.03; uniform noise is about 0.25).
    """
    views = views.detach().float().cpu().clamp(0, 1)
    solid = (foreground_mask(views) > 0.5).float().mean()
    if solid < 0.002:
        return "empty"
    t = views.permute(0, 3, 1, 2)
    smooth = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if float((t - smooth).abs().mean()) > 0.08:
        return "noise"
    if solid > 0.8:
        return "fills the frame"
    return None


def _at_judging_size(views: Tensor) -> Tensor:
    """(V, H, W, 3) views at :data:`JUDGING_SIZE` on the longer side: the tolerances are in
    pixels at that size, so a score means the same at any resolution (smaller views are
    upsampled bilinearly, larger ones area-averaged)."""
    v, h, w, _ = views.shape
    scale = JUDGING_SIZE / max(h, w)
    if scale == 1:
        return views
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    channels_first = views.permute(0, 3, 1, 2)
    if scale > 1:
        resized = F.interpolate(channels_first, size=size, mode="bilinear", align_corners=False)
    else:
        resized = F.interpolate(channels_first, size=size, mode="area")
    return resized.permute(0, 2, 3, 1).clamp(0, 1)


@torch.no_grad()
def oracle_score(views: Tensor, scene: Scene, cameras: Cameras) -> OracleScore:
    """Judge an asset's renders against the ground-truth scene (rules: :class:`OracleScore`).

    A pure function of the views, the cameras and the scene: the ground truth is rendered from
    the same cameras by the world's renderer. The ground truth scores 1 against itself.

    Args:
        views: (V, H, W, 3) renders in [0, 1] on a white background, from ``cameras``.
        scene: the prompt's ground-truth scene.
        cameras: the V cameras the views were rendered from (size H x W).

    Raises:
        ValueError: shape mismatch between views and cameras, or values outside [0, 1].
    """
    if views.ndim != 4 or views.shape[-1] != 3:
        raise ValueError(f"views must be (V, H, W, 3), got {tuple(views.shape)}")
    v, h, w, _ = views.shape
    if (len(cameras), cameras.height, cameras.width) != (v, h, w):
        raise ValueError(
            f"views {tuple(views.shape)} do not match {len(cameras)} cameras of "
            f"{cameras.height}x{cameras.width}"
        )
    if not torch.isfinite(views).all() or views.min() < -1e-3 or views.max() > 1 + 1e-3:
        raise ValueError("views must be finite and in [0, 1]")
    views = views.detach().float().cpu().clamp(0, 1)
    degenerate = degeneracy(views)
    cams = cameras.to("cpu")
    layouts = acceptable_layouts(scene)
    # the ground truth at the views' own size, then both resized alike: like with like
    readings = []  # each layout's ground truth, read once: (foreground, colour regions)
    for layout in layouts:
        reference = _at_judging_size(ground_truth_views(layout, cams))
        ref_mask = _solid_foreground(reference)
        readings.append((ref_mask, _colour_regions(reference, ref_mask)))
    views = _at_judging_size(views)
    mask = _solid_foreground(views)
    terms = max(
        (
            _compare(views, mask, ref_mask, ref_regions, layout)
            for (ref_mask, ref_regions), layout in zip(readings, layouts, strict=True)
        ),
        key=lambda t: float(t.total),
    )

    # diagnostic: are the right colours there at all, wherever they are
    ref_regions = readings[0][1]
    regions = _colour_regions(views, mask)
    hist = regions.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1e-6)[:, None]
    ref_hist = ref_regions.sum(dim=(1, 2))
    ref_hist = ref_hist / ref_hist.sum(dim=-1, keepdim=True).clamp_min(1e-6)
    color = torch.minimum(hist, ref_hist).sum(dim=-1)

    per_view = terms.per_view
    return OracleScore(
        total=float(terms.total),
        shape=float(terms.shape.mean()),
        color=float(color.mean()),
        binding=float(terms.binding.mean()),
        relation=float(terms.relation.mean()),
        per_view=per_view,
        degenerate=degenerate,
    )


@torch.no_grad()
def view_consistency(views: Tensor) -> float:
    """How much the V views of one asset agree with each other, in [0, 1] (no ground truth).

    The mean over view pairs of ``0.5 * (palette-histogram intersection of the foregrounds +
    min/max ratio of the foreground areas)``: a multi-view sample whose views show different
    objects, colours or sizes scores low. Renders of one real scene score about 0.95, not 1
    (shading and the visible side change with the view). Degenerate views (see
    :func:`degeneracy`: empty, filling the frame, noise) score 0: four frames of noise agree
    with each other perfectly, and say nothing about an object.

    Args:
        views: (V, H, W, 3) images in [0, 1] on a white background, V >= 2.
    """
    if views.ndim != 4 or views.shape[-1] != 3 or views.shape[0] < 2:
        raise ValueError(f"views must be (V >= 2, H, W, 3), got {tuple(views.shape)}")
    views = views.detach().float().cpu().clamp(0, 1)
    if degeneracy(views) is not None:
        return 0.0
    mask = foreground_mask(views)
    k = len(_PALETTE_NAMES)
    onehot = F.one_hot(palette_labels(views), k).float() * mask[..., None]
    area = mask.sum(dim=(1, 2))
    hist = onehot.sum(dim=(1, 2)) / area.clamp_min(1e-6)[:, None]
    i, j = torch.triu_indices(len(views), len(views), offset=1)
    color = torch.minimum(hist[i], hist[j]).sum(dim=-1)
    sizes = torch.minimum(area[i], area[j]) / torch.maximum(area[i], area[j]).clamp_min(1e-6)
    return float((0.5 * (color + sizes)).mean())


@dataclass
class Recognition:
    """What a 4-view image of one object looks like to the oracle.

    Attributes:
        shape: the primitive whose silhouettes (aligned by centroid and area) overlap the
            image's foreground best, over all views.
        color: the named colour covering most of the foreground.
        shape_iou: (len(SHAPES),) mean silhouette IoU per candidate shape.
    """

    shape: str
    color: str
    shape_iou: Tensor


@torch.no_grad()
def recognise_object(views: Tensor, cameras: Cameras) -> Recognition:
    """Classify a one-object asset's shape and colour from its renders (e.g. a diffusion
    sample): the oracle's nearest-neighbour reading, for "is it a red cube?" accuracy figures.

    Args:
        views: (V, H, W, 3) in [0, 1] on a white background, from ``cameras``.
        cameras: the V cameras (size H x W).
    """
    from dreamreward.world.scene import SHAPES, SceneObject

    if views.ndim != 4 or views.shape[-1] != 3 or len(cameras) != views.shape[0]:
        raise ValueError(f"views must be (V, H, W, 3) for {len(cameras)} cameras")
    views = views.detach().float().cpu().clamp(0, 1)
    mask = foreground_mask(views)
    k = len(_PALETTE_NAMES)
    # colour votes from clear foreground only: faint background noise covers many pixels
    solid = (mask > 0.5).float()
    hist = (F.one_hot(palette_labels(views), k).float() * solid[..., None]).sum(dim=(0, 1, 2))
    color = _PALETTE_NAMES[int(hist.argmax())]
    ious = []
    for shape in SHAPES:
        mesh, _ = scene_mesh(Scene((SceneObject(shape, color),)))
        ref = render_views(mesh, cameras.to("cpu"))["mask"][..., 0]
        aligned = _align(mask[:, None], mask, ref)[:, 0]
        ious.append(_soft_iou(aligned, ref).mean())
    shape_iou = torch.stack(ious)
    return Recognition(SHAPES[int(shape_iou.argmax())], color, shape_iou)
