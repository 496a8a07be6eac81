"""The text side of Reward3D training: terms that make the reward read the prompt.

Preference pairs share their prompt, so they never require the reward to read it. These terms
do (see :class:`~dreamreward.modules.reward3d.Reward3DModule`'s ``prompt_swap_weight``,
``prompt_edit_weight`` and ``crossed_edit_weight``), and the text-side evaluation measures it:

- the swap term: each asset under its own prompt against another prompt of the batch;
- the listwise term: each correct asset under its prompt, its minimal edits and another prompt;
- the crossed term: a scene and its edits, rendered, each under both prompts;
- ``_evaluate_text_side``: how often the true prompt outscores each kind of edit.

:class:`TextSideTerms` is a mixin of ``Reward3DModule``: it uses the module's ``reward``,
``hparams``, ``global_step``, baselines and ``_reward_from_tokens``.
"""

from __future__ import annotations

import json
import random
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from dreamreward.models.reward3d.preprocess import view_prompts
from dreamreward.models.reward3d.view_labels import asset_view_labels
from dreamreward.modules.preference_metrics import pairwise_logistic_loss
from dreamreward.render.cameras import OrbitCameraSampler
from dreamreward.world.prompt_edits import (
    describe_alike,
    draw_wording,
    edit_scene,
    edited_prompts,
    text_side_prompts,
    weighted_order,
)
from dreamreward.world.prompts import is_novel
from dreamreward.world.scene import Scene
from dreamreward.world.views import ground_truth_views


class TextSideTerms:
    """The text-side losses and evaluation of ``Reward3DModule`` (see the module docstring)."""

    def _text_inputs(self, prompts: list[str], cameras: Tensor) -> tuple[Tensor, Tensor]:
        """(A,) prompts and their assets' cameras (A, 4, 4, 4) -> input_ids, attention_mask
        (A*4, L) of the view prompts."""
        labels = asset_view_labels(cameras)
        texts = [t for p, lab in zip(prompts, labels, strict=True) for t in view_prompts(p, lab)]
        ids, mask = self.reward.tokenize(texts)
        return ids.to(cameras.device), mask.to(cameras.device)

    def _rewards_for_prompts(
        self,
        rewards: dict[str, Tensor],
        batch: dict[str, Any],
        assets: list[int],
        prompts: list[str],
        models: tuple[str, ...] = ("reward3d",),
    ) -> dict[str, Tensor]:
        """Rewards (len(assets),) of the given assets under other ``prompts``, per model,
        reusing the image pass of ``rewards`` (from ``forward(batch, with_tokens=True)``)."""
        ids, mask = self._text_inputs(prompts, batch["cameras"][assets])

        def rows(t: Tensor) -> Tensor:  # (A*4, ...) -> the chosen assets' 4 rows each
            return t.unflatten(0, (-1, 4))[assets].flatten(0, 1)

        out = {}
        if "reward3d" in models:
            out["reward3d"] = self._reward_from_tokens(rows(rewards["image_tokens"]), ids, mask)
        if self.baselines and {"zero_shot", "head_only"} & set(models):
            with torch.no_grad():
                features = self.reference_backbone(rows(rewards["images"]), ids, mask)
                out["zero_shot"] = self.initial_head(features).squeeze(-1)
                out["head_only"] = self.baseline_head(features).squeeze(-1)
        return out

    @staticmethod
    def _correct_assets(batch: dict[str, Any]) -> list[tuple[int, Scene]]:
        """(asset index, ground-truth scene) of the batch's correct assets with a scene, one
        per prompt (in the pair layout a correct asset appears once for each of its pairs)."""
        defects = batch.get("asset_defect") or [""] * len(batch["views"])
        scenes = batch.get("asset_scene") or [""] * len(batch["views"])
        out, seen = [], set()
        for a, (defect, scene) in enumerate(zip(defects, scenes, strict=True)):
            prompt = batch["asset_prompt"][a]
            if defect == "none" and scene and prompt not in seen:
                seen.add(prompt)
                out.append((a, Scene.from_dict(json.loads(scene))))
        return out

    def _prompt_edit_loss(self, batch: dict[str, Any], rewards: dict[str, Tensor]) -> Tensor | None:
        """Image-text matching over the batch's correct assets, listwise: each asset is scored
        under its own prompt (canonical, or a paraphrase: a hard positive), every applicable
        minimal edit of it in the same wording (hard negatives, one per kind) and another prompt
        of the batch (an easy negative); the loss is -log softmax(true prompt) over those
        rewards (see ``prompt_edit_weight``). Training prompts are never edited into a held-out
        composition.

        Listwise rather than one pair per asset: one image pass serves every edit kind, and the
        softmax weighs the edits the reward still confuses (a pairwise term with one drawn edit
        per asset stayed at chance after 100 steps)."""
        rng = random.Random(self.hparams.seed * 1_000_003 + self.global_step)
        correct = self._correct_assets(batch)
        assets: list[int] = []
        prompts: list[str] = []
        spans: list[tuple[int, int]] = []
        for a, scene in correct:
            # Half the time the canonical wording, else one paraphrase shared by the prompt and
            # its edits: a wording that differs between positive and negatives is a shortcut
            # (with independent paraphrases the canonical "own" prompt was told apart by its
            # wording, and colour synonyms buried the one changed word).
            wording = draw_wording(rng)
            candidates = [describe_alike(scene, wording)]
            edits = edited_prompts(
                scene, rng, allow_novel=False, paraphrase=wording is not None, phrasing_seed=wording
            )
            candidates += [edits[kind] for kind in sorted(edits)]
            others = [batch["asset_prompt"][b] for b, other in correct if other != scene]
            if others:
                candidates.append(rng.choice(others))
            if len(candidates) < 2:
                continue
            spans.append((len(prompts), len(prompts) + len(candidates)))
            assets += [a] * len(candidates)
            prompts += candidates
        if not spans:
            if not self._warned_no_text_side:
                self._warned_no_text_side = True
                rank_zero_warn(
                    "prompt_edit_weight > 0 but a training batch has no correct asset with a "
                    "ground-truth scene (columns defect == 'none' and scene): the text-side "
                    "term only applies to data of the primitives world"
                )
            return None
        scores = self._rewards_for_prompts(rewards, batch, assets, prompts)["reward3d"]
        losses = [-torch.log_softmax(scores[start:end], dim=0)[0] for start, end in spans]
        return torch.stack(losses).mean()

    def _crossed_edit_loss(self, batch: dict[str, Any]) -> Tensor | None:
        """The crossed term (see ``crossed_edit_weight``): per correct asset with a scene, the scene
        S and ``crossed_edits_per_asset`` edits S' (kinds drawn with the odds
        ``crossed_edit_kinds``, each applying and staying a training composition), each pair
        rendered from one fresh ring of 4 cameras, at the batch's image size; rewards r[image,
        prompt] over {S, S'} x {describe(S), describe(S')}, both prompts in one wording (canonical,
        or one shared paraphrase); the loss is the mean of -log softmax over prompts (per image) and
        over images (per prompt) of the matching entries. Renders are made here, so both images
        share one renderer and the term needs nothing but the scene column."""
        correct = self._correct_assets(batch)
        if not correct:
            return None
        # its own stream (+7): the listwise term draws its edits from (seed, step) already
        rng = random.Random(self.hparams.seed * 1_000_003 + self.global_step + 7)
        generator = torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + self.global_step)
        sampler = OrbitCameraSampler(num_views=4, width=int(batch["views"].shape[-1]))
        renders, prompts, rings = [], [], []
        for _, scene in correct:
            edits = 0
            for kind in weighted_order(self._crossed_kind_odds, rng):
                if edits == self.hparams.crossed_edits_per_asset:
                    break
                edited = edit_scene(scene, kind, rng)
                if edited is None or is_novel(edited):
                    continue
                edits += 1
                cameras = sampler.sample(1, generator).cameras
                renders += [ground_truth_views(shown, cameras) for shown in (scene, edited)]
                # one wording for both (canonical half the time): they differ in content alone
                wording = draw_wording(rng)
                prompts += [describe_alike(shown, wording) for shown in (scene, edited)]
                rings.append(cameras.c2w)
        if not renders:
            return None
        n = len(rings)
        device = batch["views"].device
        shown = torch.cat(renders).to(device)  # (n*2*4, H, W, 3)
        if self.train_augmentation is not None:
            shown = self.train_augmentation(shown.permute(0, 3, 1, 2))
        pixels = self.reward.preprocess(shown, check_range=False)
        tokens = self.reward.backbone.visual_encoder(pixels).unflatten(0, (n, 2, 4))
        # every render under both prompts of its pair: (n, image, prompt), one ring per pair
        tokens = tokens.unsqueeze(2).expand(n, 2, 2, *tokens.shape[2:]).flatten(0, 3)
        pair_prompts = [prompts[2 * i + j] for i in range(n) for _ in range(2) for j in range(2)]
        ring_per_score = torch.stack(rings).to(device).repeat_interleave(4, dim=0)
        ids, mask = self._text_inputs(pair_prompts, ring_per_score)
        scores = self._reward_from_tokens(tokens, ids, mask).view(n, 2, 2)
        target = torch.tensor([0, 1], device=device).repeat(n)
        over_prompts = F.cross_entropy(scores.flatten(0, 1), target)
        over_images = F.cross_entropy(scores.transpose(1, 2).flatten(0, 1), target)
        return (over_prompts + over_images) / 2

    @torch.no_grad()
    def _evaluate_text_side(
        self, split: str, batch: dict[str, Any], rewards: dict[str, Tensor]
    ) -> None:
        """For each correct asset: does its prompt outscore each kind of minimal edit, and a
        prompt from outside the vocabulary? The prompt and its edits are all in the canonical
        wording (:func:`describe`), so they differ in content alone (a reward that prefers one
        phrasing must not pass for one that reads the content). Edits are seeded by the prompt
        (the same ones for every model and epoch); held-out compositions are allowed here."""
        assets, prompts, kinds = [], [], []
        for a, scene in self._correct_assets(batch):
            own = batch["asset_prompt"][a]
            if (split, own) in self._text_side_seen:
                continue  # each prompt once per evaluation, whatever the batch layout
            self._text_side_seen.add((split, own))
            for kind, prompt in text_side_prompts(scene, own).items():
                assets.append(a)
                prompts.append(prompt)
                kinds.append(kind)
        if not assets:
            return
        edited = self._rewards_for_prompts(rewards, batch, assets, prompts, self._model_names())
        for model, values in edited.items():
            scores = values.tolist()
            own = {a: v for a, v, k in zip(assets, scores, kinds, strict=True) if k == "own"}
            for a, v, kind in zip(assets, scores, kinds, strict=True):
                if kind == "own":
                    continue
                count = self._text_side.setdefault((split, model, kind), [0, 0])
                count[0] += int(own[a] > v)
                count[1] += 1

    def _prompt_swap_loss(self, batch: dict[str, Any], rewards: dict[str, Tensor]) -> Tensor | None:
        """-log sigmoid(r(asset, own prompt) - r(asset, another prompt of the batch)).

        Preference pairs share their prompt, so they never require the reward to read it; this
        term does (image-text matching, as BLIP's pre-training had). Each asset is re-scored
        with the next distinct prompt of the batch, reusing its image tokens."""
        prompts = list(batch["asset_prompt"])
        distinct = list(dict.fromkeys(prompts))
        if len(distinct) < 2:
            return None
        following = {p: distinct[(i + 1) % len(distinct)] for i, p in enumerate(distinct)}
        _, ids, mask = self._inputs(batch, [following[p] for p in prompts])
        swapped = self._reward_from_tokens(rewards["image_tokens"], ids, mask)
        return pairwise_logistic_loss(rewards["reward3d"], swapped)
