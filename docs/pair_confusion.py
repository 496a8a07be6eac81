"""Which comparisons a Reward3D gets wrong: validation accuracy per (better, worse) defect.

    python docs/pair_confusion.py [--reward EXPORT_FOLDER] [--extra-sets data/generated_val]

The per-defect accuracy of ``reward3d_eval.md`` groups pairs by the worse asset's defect alone,
which mixes two questions: can the model *see* the defect (the pair against the correct asset)
and does it weigh it as the annotator does against other defects (e.g. a wrong relation,
alignment 4, is preferred to a blurred asset; a swapped-colour asset to a Janus one). This
splits every validation pair by both assets' defects and prints a table (rows: the worse
asset's defect, wrong-relation pairs again by the prompt's relation; "vs correct" first).
Validation data only (no test split is read).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from shipped_reward3d_configs import shipped_reward3d_args

from dreamreward.data.pair_balance import relation_class
from dreamreward.data.preference import pairs_as_asset_batch
from dreamreward.lightning_cli import build_from_config
from dreamreward.models.reward3d.export import shipped_reward3d_dir


def kind(defect: str) -> str:
    """Low-fidelity kinds share one column (their severities differ more than their kinds)."""
    if defect in ("", "none"):
        return "correct"
    return "low_fidelity" if defect.startswith("low_fidelity") else defect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward", default=str(shipped_reward3d_dir()), help="an export folder")
    parser.add_argument("--extra-sets", nargs="*", default=[], help="generated sets to add")
    parser.add_argument("--config", nargs="*", default=[], help="more config files to lay over")
    parser.add_argument(
        "--split", choices=["val", "train"], default="val", help="train: is it fitting at all?"
    )
    parser.add_argument("--max-batches", type=int, default=None)
    args = parser.parse_args()
    cli = build_from_config(shipped_reward3d_args(args.reward, args.extra_sets, args.config))
    module, data = cli.model.eval(), cli.datamodule
    data.setup("validate")
    loader = data.val_dataloader()
    if args.split == "train":
        # The training pairs without the training-time extras (shuffling, augmentation).
        loader = data._loader("train", shuffle=False)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for index, batch in enumerate(loader):
        if args.max_batches is not None and index >= args.max_batches:
            break
        batch = pairs_as_asset_batch(batch)
        better, worse = batch["better_index"], batch["worse_index"]
        if not better.numel():
            continue
        with torch.no_grad():
            reward = module(batch)["reward3d"]
        right = (reward[better] > reward[worse]).tolist()
        defects, scenes = batch["asset_defect"], batch["asset_scene"]
        for b, w, ok in zip(better.tolist(), worse.tolist(), right, strict=True):
            pair_rows = [kind(defects[w])]
            if pair_rows[0] == "wrong_relation":
                # 5 of 6 relations are side by side ("horizontal"), so a judge that finds every
                # stacked asset worse, whatever the prompt says, is right on 5/6 of these pairs:
                # the two classes apart show whether it reads the relation.
                pair_rows.append(f"wrong_relation, prompt {relation_class(scenes[b])}")
            for worse_kind in pair_rows:
                cell = counts[(worse_kind, kind(defects[b]))]
                cell[0] += int(ok)
                cell[1] += 1
    worse_kinds = sorted({w for w, _ in counts})
    better_kinds = ["correct", *sorted({b for _, b in counts} - {"correct"})]
    print(f"{args.reward}: {args.split} pairs by defect (cells: accuracy, pairs)")
    print("| worse \\ better | " + " | ".join(better_kinds) + " | all |")
    print("|---" * (len(better_kinds) + 2) + "|")
    total = [0, 0]
    for w in worse_kinds:
        split_row = ", prompt " in w  # the same pairs again, by the prompt's relation
        cells, row = [], [0, 0]
        for b in better_kinds:
            ok, n = counts.get((w, b), (0, 0))
            cells.append(f"{100 * ok / n:.0f}% ({n})" if n else "")
            row[0] += ok
            row[1] += n
        if not split_row:
            total[0] += row[0]
            total[1] += row[1]
        print(f"| {w} | " + " | ".join(cells) + f" | {100 * row[0] / row[1]:.1f}% ({row[1]}) |")
    print(f"all: {100 * total[0] / total[1]:.1f}% of {total[1]} pairs")


if __name__ == "__main__":
    main()
