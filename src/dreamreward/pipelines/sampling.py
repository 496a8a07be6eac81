"""Sample 4 views of a prompt from a multi-view prior: ``python -m dreamreward sample``.

    python -m dreamreward sample --prompt "a red cube on top of a blue sphere" --out grid.png

Uses the small primitives prior shipped with the package unless ``--prior`` names a folder
written by ``MultiViewPrior.save_pretrained`` (e.g. ``<log_dir>/prior`` of an MVDiffusionModule
fit). For a primitives-world prompt the oracle's score of the views is printed too.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
from dreamreward.models.mvdiffusion.prior import load_prior
from dreamreward.render.export import save_image_grid
from dreamreward.world.oracle import degeneracy, oracle_score, view_consistency
from dreamreward.world.prompts import ground_truth_scene
from dreamreward.world.views import default_cameras


def sample_views(
    prompt: str,
    out: str = "samples.png",
    prior: str | None = None,
    num_samples: int = 1,
    steps: int = 50,
    guidance_scale: float = 1.0,
    negative_prompt: str = "",
    seed: int = 0,
) -> dict[str, object]:
    """Sample ``num_samples`` x 4 canonical views (front, side, back, side) and save a grid.

    Args:
        prompt: the text prompt.
        out: the PNG to write (one row of views per sample).
        prior: a saved prior folder (default: the shipped primitives prior).
        num_samples: independent samples (rows).
        steps: DDIM steps.
        guidance_scale: classifier-free guidance weight (1 suits the shipped small prior;
            MVDream itself samples at 5-7.5).
        negative_prompt: the unconditional prompt.
        seed: seeds the initial noise.

    Returns:
        ``{"grid": path, "oracle": [...], "consistency": [...]}``: oracle scores only for
        prompts of the primitives world (free text has no ground truth), ``None`` for a sample
        that is not an asset at all; then ``"degenerate"`` lists, per sample, why (``"empty"``,
        ``"fills the frame"``, ``"noise"``) or ``None``.
    """
    if not prompt.strip():
        raise ValueError("--prompt is empty")
    if num_samples < 1:
        raise ValueError(f"--num_samples must be >= 1, got {num_samples}")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1 (DDIM steps), got {steps}")
    if not math.isfinite(guidance_scale):
        raise ValueError(f"--guidance_scale must be a finite number, got {guidance_scale}")
    if Path(out).suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file (the grid of views), got {out!r}")
    model = load_prior(prior)
    cams = default_cameras(model.image_size)
    images = model.sample(
        [prompt] * num_samples,
        mvdream_camera_embedding(cams).repeat(num_samples, 1),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        negative_prompt=negative_prompt,
        generator=torch.Generator().manual_seed(seed),
        progress=True,
    )
    views = images.permute(0, 2, 3, 1).reshape(num_samples, model.num_views, *images.shape[-2:], 3)
    path = save_image_grid(views.flatten(0, 1), Path(out), ncols=model.num_views)
    result: dict[str, object] = {"grid": str(path)}
    result["consistency"] = [round(view_consistency(v), 4) for v in views]
    scene = ground_truth_scene(prompt)  # None for free text: no ground truth to judge by
    if scene is not None:
        # a degenerate sample (empty, frame-filling, noise) gets a note, not a number that
        # looks like a judgement
        judged = [oracle_score(v, scene, cams) for v in views]
        result["oracle"] = [None if j.degenerate else round(j.total, 4) for j in judged]
        notes = [j.degenerate for j in judged]
    else:
        notes = [degeneracy(v) for v in views]
    if any(notes):
        result["degenerate"] = notes
    print(result)
    return result
