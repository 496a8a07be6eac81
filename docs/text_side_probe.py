"""How fast can the compact Reward3D learn the text side? A quick probe with a frozen image trunk.

    python docs/text_side_probe.py [--steps 300] [--lr 1e-4] [--batch 8] [--pixel-patches]
        [--cross-attention-init bert|fan_in]

Trains a fresh CompactBackbone Reward3D (mean pooling) on the correct assets of the training
prompts of ``data/primitives_1k`` (split as ``configs/reward3d/primitives.yaml`` splits it), with
the listwise text-side loss alone: each asset's own prompt or a paraphrase against every kind of
minimal edit and another prompt of the batch. The EfficientNet trunk is frozen and its features
are computed once, so a step costs only the token adapters, the text encoder (fully fine-tuned)
and the head: about 2 s for 8 assets on 2 cores. Every 100 steps and at the end it prints how
often the true prompt (canonical wording) beats each kind of edit and an out-of-vocabulary prompt
on the correct assets of the held-out prompts and of the novel compositions.

What it is for: telling apart "the architecture cannot ground text" from "the recipe is too slow
to" before a long run (docs/experiments.md, Reward3D: teaching the text side).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F

from dreamreward.data.preference import PairDataset, PreferenceDataModule
from dreamreward.models.reward3d import CompactBackbone, Reward3D
from dreamreward.models.reward3d.preprocess import view_prompts
from dreamreward.models.reward3d.view_labels import asset_view_labels
from dreamreward.world.prompt_edits import edited_prompts, text_side_prompts
from dreamreward.world.prompts import describe
from dreamreward.world.scene import Scene


def correct_assets(data: PreferenceDataModule, split: str) -> list[int]:
    """Row indices of the correct assets of a split's prompts."""
    assert data.dataset is not None
    ids = set(data.split_prompt_ids[split])
    meta = data.dataset.select_columns(["prompt_id", "defect"])[:]
    return [
        i
        for i, (p, d) in enumerate(zip(meta["prompt_id"], meta["defect"], strict=True))
        if p in ids and d == "none"
    ]


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.data = PreferenceDataModule(args.data, val_fraction=0.05, test_fraction=0.1, seed=0)
        self.data.setup()
        backbone = CompactBackbone(
            image_size=96,
            text_dropout=0.0,
            text_pooling="mean",
            pixel_patches=args.pixel_patches,
            cross_attention_init=args.cross_attention_init,
        )
        self.model = Reward3D(backbone, head="scorer", mlp_hidden=256, head_init="standard")
        self.tokens = backbone.visual_encoder
        self.tokens.trunk.eval().requires_grad_(False)
        assert self.data.dataset is not None
        scenes, prompt_ids = self.data.dataset["scene"], self.data.dataset["prompt_id"]
        reader = PairDataset(self.data.dataset, [], self.data._prompts, None)
        self.splits: dict[str, dict] = {}
        for split in ("train", "test", "novel"):
            rows = correct_assets(self.data, split)
            views, cams = zip(*(reader._asset(r) for r in rows), strict=True)
            images = self.model.preprocess(torch.cat(views), check_range=False)  # (A*4, 3, S, S)
            with torch.no_grad():
                chunks = [
                    self.tokens.trunk.forward_features(images[i : i + 256])
                    for i in range(0, len(images), 256)
                ]
            self.splits[split] = {
                "images": images,
                "features": tuple(torch.cat(f) for f in zip(*chunks, strict=True)),
                "labels": asset_view_labels(torch.stack(cams)),
                "scenes": [Scene.from_dict(json.loads(scenes[r])) for r in rows],
                "prompts": [self.data._prompts[prompt_ids[r]] for r in rows],
            }

    def rewards(self, split: str, assets: list[int], prompts: list[list[str]]) -> torch.Tensor:
        """(B,) assets, B lists of K prompts -> (B, K) rewards."""
        d = self.splits[split]
        rows = torch.tensor([4 * a + v for a in assets for v in range(4)])
        feats = [f[rows] for f in d["features"]]
        tokens = self.tokens.tokens_from_features(d["images"][rows], *feats)  # (B*4, T, D)
        b, k = len(assets), len(prompts[0])
        tokens = tokens.unflatten(0, (b, 1, 4)).expand(b, k, 4, *tokens.shape[1:])
        texts = [
            t
            for a, listed in zip(assets, prompts, strict=True)
            for p in listed
            for t in view_prompts(p, d["labels"][a])
        ]
        ids, mask = self.model.tokenize(texts)
        features = self.model.backbone.encode_text(tokens.flatten(0, 2), ids, mask)
        return self.model.head(features).view(b, k)

    @torch.no_grad()
    def text_side(self, split: str, limit: int | None = None) -> dict[str, float]:
        d = self.splits[split]
        wins: dict[str, list[int]] = {}
        self.model.eval()
        for a in range(len(d["scenes"]))[:limit]:
            prompts = text_side_prompts(d["scenes"][a], d["prompts"][a])
            r = self.rewards(split, [a], [list(prompts.values())])[0]
            for kind, value in zip(list(prompts)[1:], r[1:], strict=True):
                wins.setdefault(kind, []).append(int(r[0] > value))
        self.model.train()
        self.tokens.trunk.eval()
        return {k: round(sum(v) / len(v), 3) for k, v in sorted(wins.items())}

    def train(self, steps: int, lr: float, batch: int) -> None:
        params = [
            p
            for n, p in self.model.named_parameters()
            if not n.startswith("backbone.visual_encoder.trunk")
        ]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        train = self.splits["train"]
        rng = random.Random(0)
        start = time.perf_counter()
        print("step 0 held-out", self.text_side("test", 64), flush=True)
        for step in range(1, steps + 1):
            assets = rng.sample(range(len(train["scenes"])), batch)
            lists = []
            for a in assets:
                scene = train["scenes"][a]
                positive = describe(scene, rng) if rng.random() < 0.5 else train["prompts"][a]
                edits = list(edited_prompts(scene, rng, allow_novel=False).values())
                other = train["prompts"][rng.choice([b for b in assets if b != a])]
                # a fixed list length: one-object scenes fill with easy negatives
                lists.append([positive, *(edits + [other] * 6)[:5], other])
            rewards = self.rewards("train", assets, lists)
            loss = F.cross_entropy(rewards, torch.zeros(batch, dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 25 == 0:
                seconds = (time.perf_counter() - start) / step
                print(f"step {step} loss {loss.item():.3f} ({seconds:.2f} s/step)", flush=True)
            if step % 100 == 0:
                print(f"step {step} held-out", self.text_side("test", 64), flush=True)
        print("final held-out", self.text_side("test"), flush=True)
        print("final novel (100)", self.text_side("novel", 100), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/primitives_1k")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pixel-patches", action="store_true")
    # the probe figures in docs/experiments.md before 2026-12-06 (second session) used fan_in
    parser.add_argument("--cross-attention-init", choices=("bert", "fan_in"), default="bert")
    args = parser.parse_args()
    torch.manual_seed(0)
    Probe(args).train(args.steps, args.lr, args.batch)


if __name__ == "__main__":
    main()
