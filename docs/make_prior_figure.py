"""Regenerate ``docs/images/mvdiffusion_samples.png``: the shipped prior's samples (left, 50 DDIM
steps, no guidance, seed = row index) next to the ground truth from the same cameras (right).

    python docs/make_prior_figure.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
from dreamreward.models.mvdiffusion.prior import load_prior
from dreamreward.render.export import save_image_grid
from dreamreward.world.prompts import parse_prompt
from dreamreward.world.views import default_cameras, ground_truth_views

PROMPTS = (
    "a red cube",
    "a yellow torus",
    "a green cone",
    "a blue cylinder on top of an orange cube",
    "a black sphere",
    "a small pink cube",
    "a large white torus behind a small purple cone",
)


@torch.no_grad()
def main(out: Path = Path(__file__).parent / "images/mvdiffusion_samples.png") -> None:
    prior = load_prior().eval()
    cams = default_cameras(prior.image_size)
    rows = []
    for i, prompt in enumerate(PROMPTS):
        sample = prior.sample(
            [prompt],
            mvdream_camera_embedding(cams),
            num_inference_steps=50,
            guidance_scale=1.0,
            generator=[torch.Generator().manual_seed(i)],
        ).permute(0, 2, 3, 1)
        truth = ground_truth_views(parse_prompt(prompt), cams)
        rows.append(torch.cat([sample, truth]))
    save_image_grid(torch.cat(rows), out, ncols=2 * prior.num_views)
    print(out)


if __name__ == "__main__":
    main()
