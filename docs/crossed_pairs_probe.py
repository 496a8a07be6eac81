"""Can the compact Reward3D learn to read a prompt word against the image? Crossed pairs, fast.

    python docs/crossed_pairs_probe.py [--kind colour] [--steps 75] [--lr 1e-4] [--batch 8]
        [--cross-attention-init bert|fan_in] [--head-dropout official|0] [--no-pixel-patches]
        [--finetune full|lora] [--lora-rank 8] [--kind mixed] [--cameras orbit]
        [--paraphrase [independent|shared]]

A two-object scene S and one minimal edit S' of it (``--kind``: colour, shape, swapped colours,
relation, object left out, or ``mixed``: a random kind per pair) are rendered from the 4 canonical
cameras (``--cameras orbit``: one random ring per pair, as in training); each render is scored
under both prompts (canonical wording; ``--paraphrase``: each prompt phrased on its own draw;
``--paraphrase shared``: both in one drawn phrasing, as ``Reward3DModule`` phrases them). The loss
is a softmax over the two prompts for each render and over the two renders for each prompt, so a
preference for one render or one prompt whatever the other cancels: only reading the word against
the image lowers it. The image trunk is frozen and its features are computed once (384 training
pairs, 96 unseen pairs of training compositions); the text encoder (whole, or LoRA adapters as
``Reward3DModule(finetune="lora")``), cross-attention, token adapters and head train at ``--lr``.
Every 25 steps it prints how often, on the unseen pairs, each render prefers its own prompt (text
side) and each prompt its own render (image side).

Measured 2026-12-06 (2 cores, colour, 8 pairs a step; docs/experiments.md, "Teaching the text
side"): fan-in init 52% / 50% at step 50; BERT init 69% / 78% at step 50, 81% / 81% at step
75; BERT init with the head's official train-mode dropout 50% / 50% at step 50.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from dreamreward.models.reward3d import CompactBackbone, Reward3D
from dreamreward.models.reward3d.preprocess import view_prompts
from dreamreward.models.reward3d.view_labels import view_labels_from_c2w
from dreamreward.render.cameras import OrbitCameraSampler
from dreamreward.world.prompt_edits import EDIT_KINDS, describe_alike, edit_scene
from dreamreward.world.prompts import describe, is_novel, sample_scene
from dreamreward.world.views import default_cameras, ground_truth_views


class CrossedPairs:
    def __init__(self, args: argparse.Namespace) -> None:
        backbone = CompactBackbone(
            image_size=96,
            text_dropout=0.0,
            text_pooling="mean",
            pixel_patches=not args.no_pixel_patches,
            cross_attention_init=args.cross_attention_init,
        )
        head_dropout = None if args.head_dropout == "official" else float(args.head_dropout)
        self.model = Reward3D(
            backbone, head="scorer", mlp_hidden=256, head_init="standard", head_dropout=head_dropout
        )
        self.backbone = backbone
        self.tokens = backbone.visual_encoder
        self.tokens.trunk.eval().requires_grad_(False)
        if args.finetune == "lora":
            self._add_lora(args.lora_rank)
        self.kind = args.kind
        self.orbit = args.cameras == "orbit"
        self.paraphrase = args.paraphrase  # None, "independent" or "shared"
        self.cameras = default_cameras(64)
        start = time.perf_counter()
        self.train_pool = self.pool(args.pool, seed=0)
        self.test_pool = self.pool(96, seed=123)
        print(f"pools rendered in {time.perf_counter() - start:.0f} s", flush=True)

    def _add_lora(self, rank: int) -> None:
        """Reward3DModule's ``finetune: lora`` on the text side: LoRA (rank ``rank``, alpha
        2 x rank) on the text encoder's attention and feed-forward projections, the new layers
        (cross-attention, token adapters) and the head trained whole; adapters injected in
        place, so ``self.backbone`` and ``self.model.head`` run with them."""
        import re

        from peft import LoraConfig, get_peft_model

        pattern = re.compile(self.backbone.lora_target_modules)
        new = [f"backbone.{name}" for name in self.backbone.new_module_names()]
        targets = [
            name
            for name, module in self.model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and pattern.fullmatch(name)
            and "trunk" not in name
            and not any(name.startswith(n + ".") for n in new)
        ]
        config = LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=targets, modules_to_save=["head", *new]
        )
        self.peft = get_peft_model(self.model, config)

    def _edit(self, scene, rng: random.Random):
        """One edit of ``scene`` of the probe's kind (``mixed``: a random kind that applies and
        stays a training composition, as ``Reward3DModule``'s crossed term draws), or None."""
        if self.kind != "mixed":
            return edit_scene(scene, self.kind, rng)
        kinds = list(EDIT_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            edited = edit_scene(scene, kind, rng)
            if edited is not None and not is_novel(edited):
                return edited
        return None

    def pool(self, size: int, seed: int) -> dict:
        """``size`` (scene, edit) pairs rendered, with the frozen trunk's features, each pair's
        two prompts and view labels (one ring of cameras per pair: the canonical one, or a
        fresh draw of the training distribution with ``--cameras orbit``)."""
        rng = random.Random(seed)
        generator = torch.Generator().manual_seed(seed)
        sampler = OrbitCameraSampler(num_views=4, width=64)
        pairs, prompts, labels, renders = [], [], [], []
        while len(pairs) < size:
            scene = sample_scene(rng, num_objects=2, split="train")
            edited = self._edit(scene, rng)
            if edited is None:
                continue
            pairs.append((scene, edited))
            cameras = self.cameras
            if self.orbit:
                cameras = sampler.sample(1, generator).cameras
            labels.append(view_labels_from_c2w(cameras.c2w))
            renders += [ground_truth_views(s, cameras) for s in (scene, edited)]
            if self.paraphrase == "shared":
                wording = rng.getrandbits(32)  # always a paraphrase, shared by the pair
                prompts.append([describe_alike(s, wording) for s in pairs[-1]])
            else:
                phrasing = rng if self.paraphrase else None
                prompts.append([describe(s, phrasing) for s in pairs[-1]])
        images = self.model.preprocess(torch.stack(renders).flatten(0, 1), check_range=False)
        with torch.no_grad():
            chunks = [
                self.tokens.trunk.forward_features(images[i : i + 256])
                for i in range(0, len(images), 256)
            ]
        features = tuple(torch.cat(f) for f in zip(*chunks, strict=True))
        return {
            "pairs": pairs,
            "prompts": prompts,
            "labels": labels,
            "images": images,
            "features": features,
        }

    def rewards(self, pool: dict, pair_ids: list[int]) -> torch.Tensor:
        """(P, render, prompt) rewards: render 0 is the scene, 1 its edit; prompts likewise."""
        rows = torch.tensor(
            [4 * (2 * p + j) + v for p in pair_ids for j in range(2) for v in range(4)]
        )
        tokens = self.tokens.tokens_from_features(
            pool["images"][rows], *(f[rows] for f in pool["features"])
        )  # (P*2*4, T, D)
        n = len(pair_ids)
        tokens = tokens.unflatten(0, (n, 2, 1, 4)).expand(n, 2, 2, 4, *tokens.shape[1:])
        texts = []
        for p in pair_ids:
            for _ in range(2):
                for prompt in pool["prompts"][p]:
                    texts += view_prompts(prompt, pool["labels"][p])
        ids, mask = self.model.tokenize(texts)
        features = self.backbone.encode_text(tokens.flatten(0, 3), ids, mask)
        return self.model.head(features).view(n, 2, 2)

    @torch.no_grad()
    def evaluate(self, pool: dict) -> tuple[float, float]:
        self.model.eval()
        ids = list(range(len(pool["pairs"])))
        r = torch.cat([self.rewards(pool, ids[i : i + 16]) for i in range(0, len(ids), 16)])
        self.model.train()
        self.tokens.trunk.eval()
        text = (r[:, 0, 0] > r[:, 0, 1]).float().mean() + (r[:, 1, 1] > r[:, 1, 0]).float().mean()
        image = (r[:, 0, 0] > r[:, 1, 0]).float().mean() + (r[:, 1, 1] > r[:, 0, 1]).float().mean()
        return round(float(text) / 2, 3), round(float(image) / 2, 3)

    def train(self, steps: int, lr: float, batch: int) -> None:
        params = [
            p
            for n, p in self.model.named_parameters()
            if not n.startswith("backbone.visual_encoder.trunk") and p.requires_grad
        ]
        print(f"trainable parameters: {sum(p.numel() for p in params) / 1e6:.1f} M", flush=True)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        rng = random.Random(0)
        target = torch.tensor([0, 1]).repeat(batch)
        print(
            "step 0 unseen pairs (text side, image side)", self.evaluate(self.test_pool), flush=True
        )
        start = time.perf_counter()
        for step in range(1, steps + 1):
            r = self.rewards(
                self.train_pool, rng.sample(range(len(self.train_pool["pairs"])), batch)
            )
            over_prompts = F.cross_entropy(r.flatten(0, 1), target)
            over_renders = F.cross_entropy(r.transpose(1, 2).flatten(0, 1), target)
            loss = (over_prompts + over_renders) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 25 == 0:
                seconds = (time.perf_counter() - start) / step
                print(
                    f"step {step} loss {loss.item():.3f} ({seconds:.2f} s/step) unseen pairs "
                    f"(text side, image side) {self.evaluate(self.test_pool)}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=(*EDIT_KINDS, "mixed"), default="colour")
    parser.add_argument("--cameras", choices=("canonical", "orbit"), default="canonical")
    parser.add_argument(
        "--paraphrase",
        nargs="?",
        const="independent",
        choices=("independent", "shared"),
        help="paraphrased prompts: each on its own draw, or both of a pair in one phrasing",
    )
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pool", type=int, default=384)
    parser.add_argument("--cross-attention-init", choices=("bert", "fan_in"), default="bert")
    parser.add_argument("--head-dropout", default="0", help="'official' or a rate, e.g. 0")
    parser.add_argument("--no-pixel-patches", action="store_true")
    parser.add_argument("--finetune", choices=("full", "lora"), default="full")
    parser.add_argument("--lora-rank", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    CrossedPairs(args).train(args.steps, args.lr, args.batch)


if __name__ == "__main__":
    main()
