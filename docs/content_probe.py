"""Does more data, or a balanced loss, teach Reward3D the prompt's content? A short probe.

    python -m dreamreward build-primitives --out data/primitives_4k_s1 --num_prompts 4000 --seed 1
    python docs/content_probe.py --prompts 1000 --steps 300 --lr 3e-4 --out logs/probe_1000.json
    python docs/content_probe.py --prompts 3000 ... --balance-relation

Continues the shipped Reward3D on one kind of pair only: the correct asset against a wrong-colour,
swapped-colour or wrong-relation candidate of the same prompt, the comparisons where the prompt's
content decides. Training prompts come from a second build of the world (seed 1, 4000 prompts)
with every scene of ``data/primitives_1k`` (any split) left out, so ``--prompts N`` varies the
number of distinct training prompts at a fixed budget of steps (4 prompts a step). Accuracy on
the same kinds of pairs of prompts never trained on: the 1k set's validation prompts and the
second build's own held-out prompts (8%, the 1k set's scenes left out too). No test split is
read.

Each accuracy is also given by the prompt's relation class (``/v``: "on top of"; ``/h``: the
five horizontal relations; ``/one``: one object). 5 of 6 relations are horizontal, so on
wrong-relation pairs a judge that prefers side-by-side assets whatever the prompt says scores
5/6 without reading anything; ``--balance-relation`` weighs the pairs of vertical prompts by
n_horizontal / n_vertical so such a rule earns nothing.

``--position-pooling`` replaces the mean over the prompt's token states by a weighted mean with a
learned weight per position (starting at the mean; ``--pooling-lr``): can a pooling that is not
blind to word order learn which colour belongs to which object (swapped colours)?
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F
from shipped_reward3d_configs import shipped_reward3d_args
from torch.utils.data import DataLoader

from dreamreward.data.pair_balance import relation_class
from dreamreward.data.preference import (
    PreferenceDataModule,
    PromptGroupDataset,
    collate_asset_groups,
)
from dreamreward.data.train_sets import visual_scene_key
from dreamreward.lightning_cli import build_from_config
from dreamreward.models.reward3d.export import shipped_reward3d_dir

CONTENT_DEFECTS = {"wrong_relation", "swapped_attributes", "wrong_color"}


def relation_label(scene_json: str) -> str:
    """The accuracy keys' suffix: "v" / "h" (``pair_balance.relation_class``) or "one"."""
    return {"vertical": "v", "horizontal": "h", None: "one"}[relation_class(scene_json)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, required=True, help="distinct training prompts")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--second-world", default="data/primitives_4k_s1")
    parser.add_argument("--balance-relation", action="store_true")
    parser.add_argument(
        "--defects",
        nargs="*",
        default=sorted(CONTENT_DEFECTS),
        choices=sorted(CONTENT_DEFECTS),
        help="train on these kinds of pair only (evaluation keeps all three)",
    )
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    parser.add_argument("--out", required=True, help="JSON file for the accuracy curve")
    parser.add_argument(
        "--position-pooling",
        action="store_true",
        help="pool the text states with a learned weight per position (starts as the mean)",
    )
    parser.add_argument("--pooling-lr", type=float, default=1e-2)
    args = parser.parse_args()
    torch.manual_seed(0)
    cli = build_from_config(shipped_reward3d_args(str(shipped_reward3d_dir()), extra_sets=[]))
    module, small = cli.model, cli.datamodule
    pooling = install_position_pooling(module.reward.backbone) if args.position_pooling else None
    small.setup("fit")
    big = PreferenceDataModule(
        path=args.second_world,
        grouping="prompt",
        batch_size=4,
        val_fraction=0.08,
        test_fraction=0.0,
        seed=0,
        image_size=64,
    )
    big.setup("fit")

    def correct_scenes(dm: PreferenceDataModule) -> dict[str, tuple]:
        m = dm.dataset.select_columns(["prompt_id", "scene", "defect"])[:]
        rows = zip(m["prompt_id"], m["scene"], m["defect"], strict=True)
        return {p: visual_scene_key(s) for p, s, d in rows if d == "none"}

    small_scenes = set(correct_scenes(small).values())
    big_scenes = correct_scenes(big)

    def content_pairs(
        pairs: list, dm: PreferenceDataModule, kinds: set[str] = CONTENT_DEFECTS
    ) -> list:
        defects = dm.dataset.select_columns(["defect"])[:]["defect"]
        return [p for p in pairs if defects[p.better] == "none" and defects[p.worse] in kinds]

    def unseen(pairs: list) -> list:
        return [p for p in pairs if big_scenes[p.prompt_id] not in small_scenes]

    train_pairs = unseen(content_pairs(big.pairs["train"], big, set(args.defects)))
    prompts = sorted({p.prompt_id for p in train_pairs})
    random.Random(0).shuffle(prompts)
    chosen = set(prompts[: args.prompts])
    train_pairs = [p for p in train_pairs if p.prompt_id in chosen]
    eval_sets = {
        "val1k": (small, content_pairs(small.pairs["val"], small)),
        "held4k": (big, unseen(content_pairs(big.pairs["val"], big))),
    }
    columns = big.dataset.select_columns(["defect", "scene"])[:]
    vertical = [
        relation_class(columns["scene"][p.better]) == "vertical"
        for p in train_pairs
        if columns["defect"][p.worse] == "wrong_relation"
    ]
    relation_weight = (len(vertical) - sum(vertical)) / max(1, sum(vertical))
    print(
        f"{len(chosen)} prompts, {len(train_pairs)} training pairs (wrong relation: "
        f"{sum(vertical)} vertical, {len(vertical) - sum(vertical)} horizontal); evaluation "
        + str({k: len(v[1]) for k, v in eval_sets.items()}),
        flush=True,
    )

    def loader(dm: PreferenceDataModule, pairs: list, shuffle: bool) -> DataLoader:
        items = PromptGroupDataset(dm.dataset, pairs, dm._prompts, 64)
        generator = torch.Generator().manual_seed(0)
        return DataLoader(
            items,
            batch_size=4,
            shuffle=shuffle,
            generator=generator,
            collate_fn=collate_asset_groups,
        )

    def accuracy() -> dict:
        module.eval()
        result = {}
        with torch.no_grad():
            for name, (dm, pairs) in eval_sets.items():
                counts: dict[str, list[int]] = {}
                for b in loader(dm, pairs, False):
                    r = module(b)["reward3d"]
                    better, worse = b["better_index"].tolist(), b["worse_index"].tolist()
                    for bi, wi in zip(better, worse, strict=True):
                        ok = int(r[bi] > r[wi])
                        defect = b["asset_defect"][wi]
                        cls = relation_label(b["asset_scene"][bi])
                        for k in (defect, f"{defect}/{cls}"):
                            counts.setdefault(k, [0, 0])
                            counts[k][0] += ok
                            counts[k][1] += 1
                result[name] = {k: round(v[0] / v[1], 3) for k, v in counts.items()}
                top = [v for k, v in counts.items() if "/" not in k]
                result[name]["all"] = round(sum(v[0] for v in top) / sum(v[1] for v in top), 3)
                result[name]["n"] = {k: v[1] for k, v in counts.items()}
        module.train()
        return result

    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": params}]
    if pooling is not None:  # at the probe's lr a weight starting at 1 would not move
        groups.append({"params": [pooling], "lr": args.pooling_lr})
        params = [*params, pooling]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.0)
    log = {**vars(args), "train_pairs": len(train_pairs), "curve": [{"step": 0, **accuracy()}]}
    print(log["curve"][-1], flush=True)
    step, start = 0, time.time()
    while step < args.steps:
        for b in loader(big, train_pairs, True):
            r = module(b)["reward3d"]
            better, worse = b["better_index"], b["worse_index"]
            weights = torch.ones(len(better))
            if args.balance_relation:
                for k, (bi, wi) in enumerate(zip(better.tolist(), worse.tolist(), strict=True)):
                    is_relation = b["asset_defect"][wi] == "wrong_relation"
                    if is_relation and relation_label(b["asset_scene"][bi]) == "v":
                        weights[k] = relation_weight
            per_pair = F.softplus(r[worse] - r[better])  # the preference loss, per pair
            loss = (weights * per_pair).sum() / weights.sum()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            optimizer.step()
            step += 1
            if step % (args.steps // 2) == 0 or step == args.steps:
                seconds = round(time.time() - start)
                log["curve"].append({"step": step, "seconds": seconds, **accuracy()})
                print(log["curve"][-1], flush=True)
                with open(args.out, "w") as f:
                    json.dump(log, f, indent=1)
            if step >= args.steps:
                break
    if pooling is not None:
        log["position_weights"] = [round(w, 3) for w in pooling.detach().tolist()]
        with open(args.out, "w") as f:
            json.dump(log, f, indent=1)


def install_position_pooling(backbone) -> torch.nn.Parameter:
    """Replace a mean-pooling backbone's pooling (``pool_text``) by a weighted mean with one
    learned weight per token position (``max_length`` of them, all 1 at the start: exactly the
    mean, so the shipped model starts unchanged). A colour swap makes the states at two positions
    trade places, which any pooling that treats the tokens as a set cancels
    (``docs/binding_probe.py``); weights that differ by position do not. Returns the weights (to
    train)."""
    if backbone.text_pooling != "mean":
        raise SystemExit("--position-pooling replaces mean pooling; this backbone pools by [CLS]")
    weights = torch.nn.Parameter(torch.ones(backbone.max_length))

    def pool_text(states, attention_mask):  # (N, L, D) states -> (N, D)
        w = weights[: states.shape[1]].to(states.dtype)[None, :, None]
        if attention_mask is not None:
            w = w * attention_mask.to(states.dtype).unsqueeze(-1)  # padding weighs nothing
        return (states * w).sum(dim=1) / w.sum(dim=1).clamp_min(1e-6)

    backbone.pool_text = pool_text
    return weights


if __name__ == "__main__":
    main()
