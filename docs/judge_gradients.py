"""Where the two judges' gradients point, on the assets of the positive-control runs (README).

    python docs/judge_gradients.py runs/dreamfl_control/gt_judge_1.0/sds [--reward EXPORT_FOLDER]
        [--augmented-copies K]
    python docs/judge_gradients.py --generated data/generated_val [--reward EXPORT_FOLDER]

For every run folder under the given one (``<prompt slug>/seed0/`` with ``eval_views.png``, or
``views.png`` in runs made before it, and ``result.json``), takes the 4 canonical views of the
final asset and the gradient of each judge's score with respect to them: the shipped Reward3D and
the ground-truth judge (``world/reference_judge.py``). Prints, per prompt and on average:

- ``cos``: the cosine between the two gradients (does the learned judge push the pixels the way
  the truth does? 0 = unrelated);
- ``cos blurred``: the same after a Gaussian blur of 2 px of both (is there a coarse direction
  that agrees, under the pixel noise?);
- ``low-freq``: the share of each gradient's norm left after that blur (a gradient that can move
  a 3D asset coherently is smooth; a high-frequency one mostly cancels out over steps and
  cameras). For reference the script also prints white noise's share. The ground-truth judge
  blurs its inputs (1.5 px), which smooths its gradient too: the cosines are the evidence, the
  shares the picture.

``--generated DIR`` takes the assets from a generated set instead (``build-generated``: the
prior's samples, 4 canonical views each, from the cameras the set records), e.g. the validation
prompts' set, so that a choice between models can be made on validation prompts alone. Only
samples the oracle scores below 0.5 are used (``build_info.json``): on a right asset both
gradients are small and their direction says little.

``--input-blur S`` takes the gradient of Reward3D's score of the views blurred by a Gaussian of
S pixels (per 64 px; ``RewardGuidance(augmentation=ViewAugmentation(blur_sigma=S, ...))`` at
guidance time): the reward then reads only the coarse picture.

``--augmented-copies K`` takes Reward3D's gradient of its mean score over K augmented copies of
the views (``ViewAugmentation``'s defaults, as ``RewardGuidance(augmentation=...)`` does at
guidance time; draws seeded per asset).

``--input-noise S --augmented-copies K`` takes Reward3D's gradient of its mean score over K copies
with Gaussian pixel noise of std S and no other change (randomized smoothing;
``ViewAugmentation(noise_std=S)``), for a model trained on views so noised.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from dreamreward.guidance.reward_term import augmented_judge_scores
from dreamreward.models.reward3d import ViewAugmentation
from dreamreward.models.reward3d.export import load_reward3d
from dreamreward.render.cameras import Cameras
from dreamreward.render.export import read_scored_views
from dreamreward.render.image_ops import gaussian_blur
from dreamreward.world.reference_judge import GroundTruthJudge
from dreamreward.world.views import default_cameras


def low_frequency_share(grad: torch.Tensor, sigma: float = 2.0) -> float:
    """||blur(g)|| / ||g|| for g (V, 3, H, W)."""
    return float(gaussian_blur(grad, sigma).norm() / grad.norm().clamp_min(1e-12))


def reward_gradient(
    reward3d: torch.nn.Module,
    assets: torch.Tensor,
    prompt: str,
    cams: Cameras,
    copies: int,
    input_blur: float = 0.0,
    input_noise: float = 0.0,
) -> torch.Tensor:
    """d score / d assets (1, 4, 3, H, W); with ``copies`` > 0, of the mean score over that
    many augmented copies; with ``input_blur`` > 0 (and no copies), of the score of the views
    blurred by that sigma (pixels of a 64 px view); with ``input_noise`` > 0, of the mean score
    over ``copies`` copies with that much pixel noise and nothing else (randomized smoothing)."""
    if input_noise > 0:
        if copies < 1:
            raise SystemExit("--input-noise needs --augmented-copies K >= 1 (the noisy copies)")
        augmentation = ViewAugmentation(
            1.0, 0.0, soften_probability=0.0, blur_sigma=input_blur, noise_std=input_noise
        )
    elif copies == 0 and input_blur == 0:
        return torch.autograd.grad(reward3d.score(assets, [prompt], cameras=cams).sum(), assets)[0]
    elif copies == 0:
        copies = 1
        augmentation = ViewAugmentation(1.0, 0.0, soften_probability=0.0, blur_sigma=input_blur)
    else:
        augmentation = ViewAugmentation(blur_sigma=input_blur)
    generator = torch.Generator().manual_seed(0)
    scores = augmented_judge_scores(
        reward3d, augmentation, copies, assets, [prompt], cams, generator=generator
    )
    return torch.autograd.grad(scores.sum(), assets)[0]


def run_assets(runs_dir: str) -> Iterator[tuple[str, torch.Tensor, Cameras]]:
    """(prompt, views (4, H, W, 3), cameras) of each seed-0 run under ``runs_dir``."""
    seen = set()
    for result_file in sorted(Path(runs_dir).glob("*/seed0/result.json")):
        prompt = json.loads(result_file.read_text())["prompt"]
        if prompt in seen:  # a later evaluation's rerun of the same (deterministic) run
            continue
        seen.add(prompt)
        views, _ = read_scored_views(result_file.parent)  # (4, 64, 64, 3)
        yield prompt, views, default_cameras(views.shape[1])


def generated_assets(
    folder: str, max_oracle: float = 0.5
) -> Iterator[tuple[str, torch.Tensor, Cameras]]:
    """(prompt, views (4, H, W, 3), cameras) of each sample of a generated set that the oracle
    scores below ``max_oracle``."""
    import datasets

    from dreamreward.data.build_blends import row_cameras, row_views

    oracle = json.loads((Path(folder) / "build_info.json").read_text())["oracle_by_asset"]
    for row in datasets.load_from_disk(folder):
        if oracle[row["asset_id"]] >= max_oracle:
            continue
        views = row_views(row)
        yield row["prompt"], views, row_cameras(row, views.shape[2], views.shape[1])


def main(
    runs_dir: str | None,
    sigma: float = 2.0,
    reward: str | None = None,
    copies: int = 0,
    generated: str | None = None,
    input_blur: float = 0.0,
    input_noise: float = 0.0,
) -> None:
    reward3d, judge = load_reward3d(reward), GroundTruthJudge()
    if (runs_dir is None) == (generated is None):
        raise SystemExit("give either a runs folder or --generated DIR")
    source = run_assets(runs_dir) if runs_dir is not None else generated_assets(str(generated))
    rows = []
    for prompt, views, cams in source:
        assets = views.permute(0, 3, 1, 2)[None].clone().requires_grad_()  # (1, 4, 3, H, W)
        g_reward = reward_gradient(reward3d, assets, prompt, cams, copies, input_blur, input_noise)
        truth_score = judge.score(assets, [prompt], cameras=cams).sum()
        (g_truth,) = torch.autograd.grad(truth_score, assets)
        g_reward, g_truth = g_reward[0], g_truth[0]  # (4, 3, H, W)
        row = (
            cosine(g_reward, g_truth),
            cosine(gaussian_blur(g_reward, sigma), gaussian_blur(g_truth, sigma)),
            low_frequency_share(g_reward, sigma),
            low_frequency_share(g_truth, sigma),
        )
        rows.append(row)
        if generated is not None:  # hundreds of samples: the mean is the figure
            continue
        print(
            f"{prompt[:50]:50s} cos {row[0]:+.3f} (blurred {row[1]:+.3f})  low-freq: "
            f"Reward3D {row[2]:.2f}, truth {row[3]:.2f}"
        )
    if not rows:
        raise SystemExit(f"no assets under {runs_dir or generated}")
    mean = [sum(r[i] for r in rows) / len(rows) for i in range(4)]
    cosines = torch.tensor([r[0] for r in rows])
    low, high = bootstrap_interval(cosines)
    noise = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    print(
        f"mean over {len(rows)}: cos {mean[0]:+.3f} [{low:+.3f}, {high:+.3f}] (blurred "
        f"{mean[1]:+.3f}); low-frequency "
        f"share Reward3D {mean[2]:.2f}, ground-truth judge {mean[3]:.2f}, white noise "
        f"{low_frequency_share(noise, sigma):.2f}"
    )


def bootstrap_interval(values: torch.Tensor, draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean (seeded)."""
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(len(values), (draws, len(values)), generator=generator)
    means = values[picks].mean(dim=1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", nargs="?", default=None)
    parser.add_argument("--generated", default=None, help="a generated set instead of runs")
    parser.add_argument("--sigma", type=float, default=2.0)
    parser.add_argument("--reward", default=None, help="a Reward3D export (default: shipped)")
    parser.add_argument("--augmented-copies", type=int, default=0)
    parser.add_argument("--input-blur", type=float, default=0.0, help="blur Reward3D's input")
    parser.add_argument(
        "--input-noise", type=float, default=0.0, help="noisy copies' pixel noise (smoothing)"
    )
    args = parser.parse_args()
    main(
        args.runs_dir,
        args.sigma,
        args.reward,
        args.augmented_copies,
        args.generated,
        args.input_blur,
        args.input_noise,
    )
