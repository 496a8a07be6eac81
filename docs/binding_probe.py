"""Where a Reward3D loses binding (which colour belongs to which object), measured.

    python docs/binding_probe.py [--reward EXPORT_FOLDER] [--scenes 40] [--split novel]
    python docs/binding_probe.py --untrained mean    # or cls: the towers before any training

For two-object scenes drawn from the world (``--split novel``: compositions held out of every
training set), the correct asset (4 canonical views of the ground truth) and two edits of the
scene, a colour changed and the two colours swapped, each changed once on the image side (the
edited scene's views under the true prompt) and once on the text side (the true views under the
edited scene's prompt). Prints, per edit, the mean relative change of

- ``image tokens``: the image tower's output (does the picture's change reach the model?);
- ``feature, image side`` / ``feature, text side``: the per-view feature the scorer reads;
- ``tokens before pooling, text side``: the text encoder's per-token states (same positions:
  the edits keep the prompt's length), against ``pooled``: their mean over the prompt, the
  feature of a mean-pooling backbone;

and the score margins (true minus edited, and how often it is positive). A swap changes which
word stands where, not which words there are: if the per-token states change and their mean
does not, the pooling is where binding is lost. Nothing is trained and no preference set is read.

``--untrained POOLING`` measures the shipped architecture before training instead (pretrained
towers, new cross-attention at BERT's init, random head; ``text_pooling`` mean or cls): does the
pretrained sentence encoder tell a swap apart at all?
"""

from __future__ import annotations

import argparse
import random
import statistics

import torch

from dreamreward.models.reward3d.compact import masked_mean
from dreamreward.models.reward3d.export import load_reward3d
from dreamreward.world.prompt_edits import edit_scene
from dreamreward.world.prompts import describe, sample_scene
from dreamreward.world.views import default_cameras, ground_truth_views

LABELS = ("front", "side", "back", "side")
EDITS = ("colour", "swapped colours")


def relative(new: torch.Tensor, old: torch.Tensor) -> float:
    """Mean over views of ||new - old|| / ||old|| along the last axis."""
    return float((new - old).norm(dim=-1).mean() / old.norm(dim=-1).mean())


@torch.no_grad()
def measure(model, scenes: int, split: str, seed: int = 1) -> dict[str, dict[str, list[float]]]:
    """Per edit, lists of the changes and margins described in the module docstring."""
    cams = default_cameras(64)
    rng = random.Random(seed)
    out: dict[str, dict[str, list[float]]] = {kind: {} for kind in EDITS}
    drawn = 0
    while drawn < scenes:
        scene = sample_scene(rng, 2, split=split)
        edits = {kind: edit_scene(scene, kind, random.Random(drawn)) for kind in EDITS}
        if any(edited is None for edited in edits.values()):
            continue  # e.g. swapped colours of two objects of one colour
        drawn += 1
        prompt = describe(scene)
        views = ground_truth_views(scene, cams)[None]  # (1, 4, 64, 64, 3)
        images, ids, mask = model.encode_inputs(views, [prompt], LABELS)
        tokens = model.backbone.visual_encoder(images)  # (4, T, D)
        states = model.backbone.text_encoder(ids, mask, tokens)  # (4, L, D)
        feature = model.backbone.pool_text(states, mask)  # (4, D)
        score = float(model.score(views, [prompt], LABELS)[0])
        for kind, edited in edits.items():
            row = out[kind]
            edited_views = ground_truth_views(edited, cams)[None]
            edited_images, _, _ = model.encode_inputs(edited_views, [prompt], LABELS)
            edited_tokens = model.backbone.visual_encoder(edited_images)
            _, edited_ids, edited_mask = model.encode_inputs(views, [describe(edited)], LABELS)
            edited_states = model.backbone.text_encoder(edited_ids, edited_mask, tokens)
            pairs = {
                "image tokens": (edited_tokens.flatten(1), tokens.flatten(1)),
                "feature, image side": (
                    model.backbone.encode_text(edited_tokens, ids, mask),
                    feature,
                ),
                "feature, text side": (
                    model.backbone.pool_text(edited_states, edited_mask),
                    feature,
                ),
            }
            for name, (new, old) in pairs.items():
                row.setdefault(name, []).append(relative(new, old))
            if edited_ids.shape == ids.shape and torch.equal(edited_mask, mask):
                per_token = (edited_states - states).norm(dim=-1) / states.norm(dim=-1)
                row.setdefault("tokens before pooling, text side", []).append(
                    float(per_token[mask.bool()].mean())
                )
                pooled, edited_pooled = masked_mean(states, mask), masked_mean(edited_states, mask)
                row.setdefault("pooled, text side", []).append(relative(edited_pooled, pooled))
            image_margin = score - float(model.score(edited_views, [prompt], LABELS)[0])
            text_margin = score - float(model.score(views, [describe(edited)], LABELS)[0])
            row.setdefault("margin, image side", []).append(image_margin)
            row.setdefault("margin, text side", []).append(text_margin)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward", default=None, help="an export folder (default: shipped)")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--split", choices=("novel", "train", "any"), default="novel")
    parser.add_argument("--untrained", choices=("mean", "cls"), default=None)
    args = parser.parse_args()
    if args.untrained is not None:
        from dreamreward.models.reward3d import CompactBackbone, Reward3D

        torch.manual_seed(0)
        backbone = CompactBackbone(
            image_size=96, text_pooling=args.untrained, pixel_patches=True,
            cross_attention_init="bert",
        )  # fmt: skip
        model = Reward3D(backbone, head="scorer", mlp_hidden=256, head_init="standard").eval()
    else:
        model = load_reward3d(args.reward).eval()
    results = measure(model, args.scenes, args.split)
    print(f"{args.scenes} two-object scenes ({args.split}); relative changes, mean [median]")
    for kind, row in results.items():
        print(f"{kind}:")
        for name, values in row.items():
            line = f"  {name:34s} {statistics.mean(values):+.3f} [{statistics.median(values):+.3f}]"
            if name.startswith("margin"):
                line += f"  true prompt / asset ahead in {sum(v > 0 for v in values)}/{len(values)}"
            print(line)


if __name__ == "__main__":
    main()
