"""The oracle: the expert annotator of the primitives world, and the oracle score of any asset.

Two functions with different jobs:

- :func:`annotate` rates *candidates* whose defects are known (the preference set's labels):
  1-6 ratings for alignment, fidelity and consistency, an overall score and a ranking with ties,
  by written rules (``data_cards/primitives_preferences.md``).
- :func:`oracle_score` judges *any* 4-view render (an optimised NeRF, a sampled image...)
  against the prompt's ground-truth scene rendered from the same cameras: right shapes, right
  colours bound to the right shapes in the right places, the same object in every view. This is
  what the diffusion prior and DreamFL are evaluated by. It is robust to small shifts and scale
  changes (silhouettes are aligned by their centroid and area before comparison) and to shading
  (colours are compared with a shading factor fitted per pixel).
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
from dreamreward.world.views import render_views

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


@dataclass
class OracleScore:
    """The oracle's judgement of one 4-view asset; every score in [0, 1].

    Attributes:
        total: the headline score, ``0.75 * mean(per_view) + 0.25 * min(per_view)`` (a view
            that shows something else, as in a Janus asset, costs more than its share).
        shape: mean silhouette IoU after centroid/area alignment.
        color: mean palette-histogram intersection with the ground truth.
        binding: mean IoU of each ground-truth colour's region (right colour on the right part,
            in the right place relative to the other object).
        per_view: (V,) per-view scores.
    """

    total: float
    shape: float
    color: float
    binding: float
    per_view: Tensor


def foreground_mask(rgb: Tensor, threshold: float = 0.12) -> Tensor:
    """(N, H, W, 3) images on a light background -> (N, H, W) soft foreground in [0, 1].

    The background colour is each view's median border pixel (pure white for the world's own
    renders, which never touch the border; a diffusion sample's background is often an
    off-white, a little noisy): a pixel is foreground as far as it is darker than that, in
    any channel, by up to ``threshold``. The pixel's own darkness is measured against the
    lighter of the two, so a white object on a grey-ish background still shows.
    """
    n, h, w, _ = rgb.shape
    border = torch.cat(
        [rgb[:, 0], rgb[:, -1], rgb[:, 1:-1, 0], rgb[:, 1:-1, -1]], dim=1
    )  # (N, 2W + 2(H - 2), 3)
    background = border.median(dim=1).values.clamp_max(1.0)  # (N, 3)
    # only a light background is one: a view whose border is object (dark) keeps pure white
    light = background.amin(dim=-1, keepdim=True) > 0.6
    background = torch.where(light, background, torch.ones_like(background))
    distance = (background[:, None, None, :] - rgb).clamp_min(0).amax(dim=-1)
    return (distance / threshold).clamp(0, 1)


def palette_labels(rgb: Tensor, min_shade: float = 0.35) -> Tensor:
    """Label each pixel with its nearest named colour, allowing for shading.

    For each palette colour ``a`` the best shading factor ``s = clamp(p.a / a.a, min_shade, 1.05)``
    is fitted and the residual ``|p - s a|`` compared.

    Args:
        rgb: (..., 3).

    Returns:
        (...,) long index into :data:`COLORS` order.
    """
    palette = _PALETTE.to(rgb)
    dots = rgb @ palette.t()  # (..., K)
    scale = (dots / (palette * palette).sum(-1)).clamp(min_shade, 1.05)
    residual = (rgb[..., None, :] - scale[..., None] * palette).norm(dim=-1)
    return residual.argmin(dim=-1)


def _moments(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(N, H, W) -> centroid (N, 2) in pixels (x, y) and area (N,)."""
    n, h, w = mask.shape
    ys = torch.arange(h, dtype=mask.dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=mask.dtype).view(1, 1, w)
    area = mask.sum(dim=(1, 2)).clamp_min(1e-6)
    cx = (mask * xs).sum(dim=(1, 2)) / area
    cy = (mask * ys).sum(dim=(1, 2)) / area
    return torch.stack([cx, cy], dim=-1), area


def _align(images: Tensor, src_mask: Tensor, dst_mask: Tensor) -> Tensor:
    """Warp ``images`` (N, C, H, W) so ``src_mask``'s centroid and area match ``dst_mask``'s."""
    n, _, h, w = images.shape
    c_src, a_src = _moments(src_mask)
    c_dst, a_dst = _moments(dst_mask)
    scale = (a_src / a_dst).sqrt().clamp(0.5, 2.0)  # >1 shrinks the source
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


@torch.no_grad()
def oracle_score(views: Tensor, scene: Scene, cameras: Cameras) -> OracleScore:
    """Judge an asset's renders against the ground-truth scene.

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
    mesh, _ = scene_mesh(scene)
    gt = render_views(mesh, cameras.to("cpu"))
    gt_rgb, gt_mask = gt["rgb"], gt["mask"][..., 0]
    mask = foreground_mask(views)

    # 1. shape: silhouettes aligned by centroid and area
    aligned = _align(torch.cat([mask[:, None], views.permute(0, 3, 1, 2)], dim=1), mask, gt_mask)
    a_mask, a_rgb = aligned[:, 0], aligned[:, 1:].permute(0, 2, 3, 1)
    shape = _soft_iou(a_mask, gt_mask)

    # 2. colour: histogram of palette labels over the foreground, vs the ground truth's
    k = len(_PALETTE_NAMES)
    gt_labels = palette_labels(gt_rgb)
    labels = palette_labels(a_rgb)
    onehot_gt = F.one_hot(gt_labels, k).float() * gt_mask[..., None]
    onehot = F.one_hot(labels, k).float() * a_mask[..., None]
    hist_gt = onehot_gt.sum(dim=(1, 2)) / gt_mask.sum(dim=(1, 2)).clamp_min(1e-6)[:, None]
    hist = onehot.sum(dim=(1, 2)) / a_mask.sum(dim=(1, 2)).clamp_min(1e-6)[:, None]
    color = torch.minimum(hist, hist_gt).sum(dim=-1)

    # 3. binding: each scene colour's region overlaps the ground truth's region of that colour
    scene_colors = sorted({_PALETTE_NAMES.index(o.color) for o in scene.objects})
    binding = torch.stack(
        [_soft_iou(onehot[..., c], onehot_gt[..., c]) for c in scene_colors]
    ).mean(dim=0)

    per_view = 0.35 * shape + 0.30 * color + 0.35 * binding
    total = 0.75 * per_view.mean() + 0.25 * per_view.min()
    return OracleScore(
        total=float(total),
        shape=float(shape.mean()),
        color=float(color.mean()),
        binding=float(binding.mean()),
        per_view=per_view,
    )


@torch.no_grad()
def view_consistency(views: Tensor) -> float:
    """How much the V views of one asset agree with each other, in [0, 1] (no ground truth).

    The mean over view pairs of ``0.5 * (palette-histogram intersection of the foregrounds +
    min/max ratio of the foreground areas)``: a multi-view sample whose views show different
    objects, colours or sizes scores low. Renders of one real scene score about 0.95, not 1
    (shading and the visible side change with the view).

    Args:
        views: (V, H, W, 3) images in [0, 1] on a white background, V >= 2.
    """
    if views.ndim != 4 or views.shape[-1] != 3 or views.shape[0] < 2:
        raise ValueError(f"views must be (V >= 2, H, W, 3), got {tuple(views.shape)}")
    views = views.detach().float().cpu().clamp(0, 1)
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
