"""Regenerate the README's DreamFL pictures.

``docs/images/dreamfl_main_job.png`` from two finished main-job runs: the SDS baseline's
canonical views (top), DreamFL's (middle) and the prompt's ground truth rendered by the world's
renderer from the same cameras (bottom)::

    python docs/make_dreamfl_figure.py runs/dreamfl_primitives_sds/version_0 \\
        runs/dreamfl_primitives/version_0

``docs/images/dreamfl_eval.png`` from an ``evaluate-dreamfl`` folder: one row per prompt (seed
0), SDS | DreamFL | the ranker | DreamFL with the ground-truth judge (those of the two that were
run) | ground truth, 4 views each::

    python docs/make_dreamfl_figure.py --eval runs/dreamfl_eval "a large orange cone" ...

``docs/images/dreamfl_control.png`` from the positive-control folders (README): one row per
prompt, SDS | DreamFL with Reward3D | DreamFL with the ground-truth judge (both at
``grad_fraction`` 1.0) | ground truth::

    python docs/make_dreamfl_figure.py --control runs/dreamfl_control "a small green cube ..." ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from dreamreward.render.export import file_slug, read_scored_views, save_image_grid, unique_slug
from dreamreward.world.prompts import parse_prompt
from dreamreward.world.views import default_cameras, ground_truth_views


def main(sds_run: str, dreamfl_run: str, out: str = "docs/images/dreamfl_main_job.png") -> None:
    rows = []
    for run in (sds_run, dreamfl_run):
        rows.append(read_scored_views(run)[0])
        prompt = json.loads((Path(run) / "result.json").read_text())["prompt"]
    cams = default_cameras(rows[0].shape[1])
    rows.append(ground_truth_views(parse_prompt(prompt), cams))
    print(save_image_grid(torch.cat(rows), out, ncols=4))


def eval_figure(eval_dir: str, *prompts: str, out: str = "docs/images/dreamfl_eval.png") -> None:
    """SDS, DreamFL, then the evaluation's other methods that were run (the ranker, the
    ground-truth judge), in that order."""
    order = ["sds", "dreamfl", "ranker", "ground_truth"]
    methods = [Path(eval_dir, m) for m in order if Path(eval_dir, m).is_dir()]
    runs_figure(methods, prompts, out)


def control_figure(
    control_dir: str, *prompts: str, out: str = "docs/images/dreamfl_control.png"
) -> None:
    root = Path(control_dir)
    methods = [
        root / "gt_judge_1.0" / "sds",
        root / "reward3d_1.0" / "dreamfl",
        root / "gt_judge_1.0" / "dreamfl",
    ]
    runs_figure(methods, prompts, out)


def runs_figure(methods: list[Path], prompts: tuple[str, ...], out: str) -> None:
    """One row per prompt (seed 0): each method's 4 canonical views, then the ground truth."""
    rows = []
    for prompt in prompts:
        for method in methods:
            folder = method / unique_slug(prompt)
            if not folder.is_dir():  # an evaluation made before run folders were unique
                folder = method / file_slug(prompt)
            rows.append(read_scored_views(folder / "seed0")[0])
        rows.append(ground_truth_views(parse_prompt(prompt), default_cameras(64)))
    print(save_image_grid(torch.cat(rows), out, ncols=4 * (len(methods) + 1)))


if __name__ == "__main__":
    if sys.argv[1] == "--eval":
        eval_figure(*sys.argv[2:])
    elif sys.argv[1] == "--control":
        control_figure(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
