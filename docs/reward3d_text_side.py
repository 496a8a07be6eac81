"""Does a Reward3D read its prompt? The text side of a model, measured two ways.

    python docs/reward3d_text_side.py [--model EXPORT_FOLDER] [--data data/primitives_1k]
                                      [--out runs/reward3d_text_side] [--probe-only]

1. Probe: the correct asset of a few scenes (the 4 canonical views) scored under its own
   prompt, a paraphrase, each kind of minimal edit (``dreamreward.world.prompt_edits``) and
   out-of-vocabulary prompts; and how far the per-view feature moves when the prompt changes
   (own -> an out-of-vocabulary prompt) against when the image changes (the asset -> a blank
   frame). A text-blind model scores every prompt alike and its feature moves only with the
   image.
2. The text side on the test splits of a preference set (held-out prompts, novel compositions):
   how often the true prompt outscores each kind of edit on the correct assets, through
   ``Reward3DModule.test`` with the model frozen (``reward3d_eval.md`` in ``--out``).

Default model: the shipped one (``load_reward3d()``); ``--model`` takes any export folder.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch

from dreamreward.models.reward3d.export import load_reward3d
from dreamreward.world.prompt_edits import OUT_OF_VOCABULARY_PROMPTS, edited_prompts
from dreamreward.world.prompts import describe, parse_prompt
from dreamreward.world.views import default_cameras, ground_truth_views

PROBE_PROMPTS = (
    "a red cube on top of a blue sphere",
    "a green cone next to a yellow torus",
    "a large white cylinder to the right of a small purple cube",
    "a pink sphere",
    "a black torus",
)
LABELS = ("front", "side", "back", "side")


@torch.no_grad()
def probe(model) -> dict:
    cams = default_cameras(64)
    rows = []
    for prompt in PROBE_PROMPTS:
        scene = parse_prompt(prompt)
        views = ground_truth_views(scene, cams)[None]  # (1, 4, 64, 64, 3)
        rng = random.Random(0)
        prompts = {"own": prompt, "paraphrase": describe(scene, rng)}
        prompts |= edited_prompts(scene, rng)
        prompts |= {f"out of vocabulary {i}": p for i, p in enumerate(OUT_OF_VOCABULARY_PROMPTS)}
        scores = {
            kind: float(model.score(views, [text], LABELS)[0]) for kind, text in prompts.items()
        }
        # the per-view feature: how far a new prompt moves it, against a new image
        images, ids, mask = model.encode_inputs(views, [prompt], LABELS)
        own = model.backbone(images, ids, mask)
        _, ids_oov, mask_oov = model.encode_inputs(views, [OUT_OF_VOCABULARY_PROMPTS[0]], LABELS)
        other_text = model.backbone(images, ids_oov, mask_oov)
        blank, _, _ = model.encode_inputs(torch.ones_like(views), [prompt], LABELS)
        other_image = model.backbone(blank, ids, mask)
        norm = own.norm(dim=-1).mean()
        rows.append(
            {
                "prompt": prompt,
                "scores": scores,
                "feature_change_prompt": float((other_text - own).norm(dim=-1).mean() / norm),
                "feature_change_image": float((other_image - own).norm(dim=-1).mean() / norm),
            }
        )
    return {"rows": rows}


def text_side_on_test_splits(model, data: str, out: Path) -> dict:
    import lightning as L

    from dreamreward.data.preference import PreferenceDataModule
    from dreamreward.modules.reward3d import Reward3DModule

    module = Reward3DModule(model, finetune="head_only", baselines=False)
    dm = PreferenceDataModule(
        data, grouping="prompt", batch_size=4, val_fraction=0.05, test_fraction=0.1, seed=0
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, default_root_dir=str(out), enable_progress_bar=True
    )
    trainer.test(module, dm, verbose=False)
    from dreamreward.modules.reward3d_report import write_eval_table

    write_eval_table(module._test_results, out)
    return module._test_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="export folder (default: shipped)")
    parser.add_argument("--data", default="data/primitives_1k")
    parser.add_argument("--out", default="runs/reward3d_text_side")
    parser.add_argument("--probe-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_reward3d(args.model)
    result = {"model": args.model or "shipped", "probe": probe(model)}
    for row in result["probe"]["rows"]:
        scores = row["scores"]
        spread = statistics.pstdev(scores.values())
        print(
            f"{row['prompt']!r}: own {scores['own']:+.4f}, spread over prompts {spread:.4f}; "
            f"feature change with the prompt {row['feature_change_prompt']:.2e}, with the image "
            f"{row['feature_change_image']:.2e}"
        )
    if not args.probe_only:
        result["test"] = text_side_on_test_splits(model, args.data, out)
        print((out / "reward3d_eval.md").read_text())
    (out / "text_side.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
