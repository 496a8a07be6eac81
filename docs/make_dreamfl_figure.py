"""Regenerate the README's DreamFL pictures.

``docs/images/dreamfl_main_job.png`` from two finished main-job runs: the SDS baseline's
canonical views (top), DreamFL's (middle) and the prompt's ground truth rendered by the world's
renderer from the same cameras (bottom)::

    python docs/make_dreamfl_figure.py runs/dreamfl_primitives_sds/version_0 \\
        runs/dreamfl_primitives/version_0

``docs/images/dreamfl_eval.png`` from an ``evaluate-dreamfl`` folder: one row per prompt (seed
0), SDS | DreamFL | ground truth, 4 views each::

    python docs/make_dreamfl_figure.py --eval runs/dreamfl_eval "a large orange cone" ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from dreamreward.render.export import file_slug, save_image_grid
from dreamreward.world.prompts import parse_prompt
from dreamreward.world.views import default_cameras, ground_truth_views


def grid_tiles(path: Path, size: int, count: int = 4, padding: int = 2) -> torch.Tensor:
    """The ``count`` tiles of a one-row ``save_image_grid`` PNG: (count, size, size, 3)."""
    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).float() / 255
    tiles = []
    for i in range(count):
        x = padding + i * (size + padding)
        tiles.append(image[padding : padding + size, x : x + size])
    return torch.stack(tiles)


def main(sds_run: str, dreamfl_run: str, out: str = "docs/images/dreamfl_main_job.png") -> None:
    rows = []
    for run in (sds_run, dreamfl_run):
        config = Path(run) / "config.yaml"
        size = 64
        if config.is_file():
            size = yaml.safe_load(config.read_text())["model"]["init_args"]["eval_resolution"]
        rows.append(grid_tiles(Path(run) / "views.png", size))
        prompt = json.loads((Path(run) / "result.json").read_text())["prompt"]
    cams = default_cameras(rows[0].shape[1])
    rows.append(ground_truth_views(parse_prompt(prompt), cams))
    print(save_image_grid(torch.cat(rows), out, ncols=4))


def eval_figure(eval_dir: str, *prompts: str, out: str = "docs/images/dreamfl_eval.png") -> None:
    rows = []
    for prompt in prompts:
        for method in ("sds", "dreamfl"):
            rows.append(
                grid_tiles(Path(eval_dir, method, file_slug(prompt), "seed0", "views.png"), 64)
            )
        cams = default_cameras(64)
        rows.append(ground_truth_views(parse_prompt(prompt), cams))
    print(save_image_grid(torch.cat(rows), out, ncols=12))


if __name__ == "__main__":
    if sys.argv[1] == "--eval":
        eval_figure(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
