"""How far a Reward3D's rankings hold when the views move a little (validation pairs).

    python docs/reward_robustness.py [--reward EXPORT_FOLDER] [--epsilons 0.005 0.02] \
        [--steps 2] [--max-batches N] [--input-blur S]

For every validation batch of the CPU-scale configs (primitives.yaml + text_side.yaml +
generated.yaml: the procedural pairs and the validation prompts' generated pairs), the pairwise
accuracy on the views as they are, and after each view is moved inside an L2 ball of RMS
``epsilon`` per pixel value (0.005 is about 1.3/255) by a few steps of gradient ascent on the
preference loss (``modules/adversarial_views.py``, as adversarial training uses). A judge whose
order flips under changes nobody can see has a pixel gradient that points at such changes:
that is what DreamFL would follow. Validation data only (no test split is read).

``--input-blur S``: the reward reads every view blurred by a Gaussian of S pixels (per 64 px), as
``ViewAugmentation(blur_sigma=S)`` makes it read at guidance time; the moves are still made on
the unblurred views, so this measures a judge that is smooth by construction.
"""

from __future__ import annotations

import argparse

import torch
from shipped_reward3d_configs import shipped_reward3d_args

from dreamreward.data.preference import pairs_as_asset_batch
from dreamreward.lightning_cli import build_from_config
from dreamreward.models.reward3d.export import shipped_reward3d_dir
from dreamreward.modules.adversarial_views import adversarial_views
from dreamreward.modules.preference_metrics import pairwise_logistic_loss
from dreamreward.render.image_ops import gaussian_blur


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward", default=str(shipped_reward3d_dir()), help="an export folder")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.005, 0.02])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--input-blur", type=float, default=0.0, help="sigma per 64 px")
    args = parser.parse_args()
    cli = build_from_config(shipped_reward3d_args(args.reward, ["data/generated_val"]))
    module, data = cli.model.eval(), cli.datamodule
    data.setup("validate")
    correct = {eps: 0 for eps in (0.0, *args.epsilons)}
    pairs = 0
    for index, batch in enumerate(data.val_dataloader()):
        if args.max_batches is not None and index >= args.max_batches:
            break
        batch = pairs_as_asset_batch(batch)
        better, worse = batch["better_index"], batch["worse_index"]
        if not better.numel():
            continue

        def rewards(views: torch.Tensor, batch: dict = batch) -> torch.Tensor:
            if args.input_blur > 0:
                sigma = args.input_blur * views.shape[-1] / 64
                views = gaussian_blur(views.flatten(0, 1), sigma).view_as(views)
            return module({**batch, "views": views})["reward3d"]

        def loss(views: torch.Tensor, better=better, worse=worse) -> torch.Tensor:
            reward = rewards(views)
            return pairwise_logistic_loss(reward[better], reward[worse])

        pairs += int(better.numel())
        for eps in correct:
            gen = torch.Generator().manual_seed(index)
            views = adversarial_views(loss, batch["views"], eps, args.steps, gen)
            with torch.no_grad():
                reward = rewards(views)
            correct[eps] += int((reward[better] > reward[worse]).sum())
    print(f"{args.reward}: {pairs} validation pairs, input blur {args.input_blur}")
    for eps, n in correct.items():
        print(f"  RMS {eps:.3f} per value ({eps * 255:.1f}/255): accuracy {n / pairs:.3f}")


if __name__ == "__main__":
    main()
