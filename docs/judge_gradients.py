"""Where the two judges' gradients point, on the assets of the positive-control runs (README).

    python docs/judge_gradients.py runs/dreamfl_control/gt_judge_1.0/sds

For every run folder under the given one (``<prompt slug>/seed0/`` with ``views.png`` and
``result.json``), takes the 4 canonical views of the final asset and the gradient of each judge's
score with respect to them: the shipped Reward3D and the ground-truth judge
(``world/reference_judge.py``). Prints, per prompt and on average:

- ``cos``: the cosine between the two gradients (does the learned judge push the pixels the way
  the truth does? 0 = unrelated);
- ``low-freq``: the share of each gradient's norm left after a Gaussian blur of 2 px (a gradient
  that can move a 3D asset coherently is smooth; a high-frequency one mostly cancels out over
  steps and cameras).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from dreamreward.models.reward3d.export import load_reward3d
from dreamreward.render.cameras import view_labels_from_c2w
from dreamreward.world.reference_judge import GroundTruthJudge, _blur
from dreamreward.world.views import default_cameras

sys.path.insert(0, str(Path(__file__).parent))
from make_dreamfl_figure import grid_tiles  # noqa: E402


def low_frequency_share(grad: torch.Tensor, sigma: float = 2.0) -> float:
    """||blur(g)|| / ||g|| for g (V, 3, H, W)."""
    return float(_blur(grad, sigma).norm() / grad.norm().clamp_min(1e-12))


def main(runs_dir: str) -> None:
    reward3d, judge = load_reward3d(), GroundTruthJudge()
    cams = default_cameras(64)
    labels = view_labels_from_c2w(cams.c2w)
    rows = []
    for result_file in sorted(Path(runs_dir).glob("*/seed0/result.json")):
        prompt = json.loads(result_file.read_text())["prompt"]
        views = grid_tiles(result_file.parent / "views.png", 64)  # (4, 64, 64, 3)
        assets = views.permute(0, 3, 1, 2)[None].clone().requires_grad_()  # (1, 4, 3, H, W)
        (g_reward,) = torch.autograd.grad(reward3d.score(assets, [prompt], [labels]).sum(), assets)
        (g_truth,) = torch.autograd.grad(
            judge.score(assets, [prompt], [labels], cams).sum(), assets
        )
        cos = float(torch.nn.functional.cosine_similarity(g_reward.flatten(), g_truth.flatten(), 0))
        row = (cos, low_frequency_share(g_reward[0]), low_frequency_share(g_truth[0]))
        rows.append(row)
        print(
            f"{prompt[:55]:55s} cos {row[0]:+.3f}  low-freq: Reward3D {row[1]:.2f}, "
            f"truth {row[2]:.2f}"
        )
    if not rows:
        raise SystemExit(f"no */seed0/result.json under {runs_dir}")
    mean = [sum(r[i] for r in rows) / len(rows) for i in range(3)]
    print(f"mean over {len(rows)}: cos {mean[0]:+.3f}, low-frequency share Reward3D {mean[1]:.2f}, "
          f"ground-truth judge {mean[2]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
