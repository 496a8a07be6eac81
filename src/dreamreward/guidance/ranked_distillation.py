"""A reward used as a ranker, not through its gradient: DreamDPO-style preference distillation.

DreamDPO (Zhou et al., ICML 2025) asks the reward which of two noisy versions of the same render
the prior turns into the better image, and distils towards the winner and away from the loser.
Per step and object, with one timestep t and two noise draws eps_a, eps_b:

1. the prior predicts from both noised renders, giving two one-step predictions x0_a, x0_b and
   two distillation residuals d_a, d_b (``z - target``: ``w(t) (eps_hat - eps)`` for SDS,
   ``z - x0_hat`` for MVDream's x0 loss);
2. the judge (Reward3D, or the ground-truth judge) scores the decoded x0_a and x0_b (no
   gradient: the reward only orders them);
3. the gradient on the render is ``d_win - d_lose`` (pull towards the winner's prediction, push
   away from the loser's) when the score gap exceeds ``score_margin``, and ``d_win`` alone
   (plain distillation from the better draw) when the two are too close to call: a push away from
   a near-identical loser is noise.

Against DreamFL: the reward's gradient never reaches the asset (no straight-through x_hat, no
weighting between two gradients), so a judge whose pixel gradient is noise can still help if its
ranking is right; the price is a second prior prediction and two judge forwards (no backward).

Before ``start_step`` the step is plain distillation with one draw, exactly the baseline's.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamreward.guidance.judge import Judge
from dreamreward.guidance.reward_term import frozen_judge
from dreamreward.guidance.score_distillation import (
    DistillationOutput,
    ScoreDistillation,
    prior_camera_condition,
)
from dreamreward.guidance.sources import PriorSource, RewardSource
from dreamreward.guidance.timesteps import TimestepSchedule
from dreamreward.render.cameras import Cameras


class RankedDistillation(ScoreDistillation):
    """Score distillation whose two noise draws per step are ranked by a judge (DreamDPO).

    Args:
        judge: the ranker (default: the shipped primitives Reward3D); a
            :class:`~dreamreward.world.reference_judge.GroundTruthJudge` is the positive control.
        score_margin: score gaps at or below this fall back to plain distillation from the
            winner (DreamDPO's threshold tau, in the judge's units).
        start_step: first optimizer step that ranks (before it: one draw, plain distillation).
        prior, loss, guidance_scale, std_rescale, negative_prompt, timesteps: as
            :class:`~dreamreward.guidance.score_distillation.ScoreDistillation`.
    """

    def __init__(
        self,
        judge: RewardSource | Judge | None = None,
        score_margin: float = 0.01,
        start_step: int = 0,
        prior: PriorSource | None = None,
        loss: Literal["x0", "sds"] = "x0",
        guidance_scale: float = 50.0,
        std_rescale: float = 0.5,
        negative_prompt: str = "",
        timesteps: TimestepSchedule | None = None,
    ) -> None:
        if not score_margin >= 0:  # also refuses NaN
            raise ValueError(f"RankedDistillation.score_margin must be >= 0, got {score_margin}")
        if start_step < 0:
            raise ValueError(f"RankedDistillation.start_step must be >= 0, got {start_step}")
        super().__init__(prior, loss, guidance_scale, std_rescale, negative_prompt, timesteps)
        self.judge = frozen_judge(judge)
        self.score_margin = score_margin
        self.start_step = start_step

    def forward(
        self,
        renders: Tensor,
        prompts: list[str],
        cameras: Cameras | Tensor,
        step: int,
        generator: torch.Generator,
        render_cameras: Cameras | None = None,
    ) -> DistillationOutput:
        """As :meth:`ScoreDistillation.forward`; the judge needs the B*V renders' cameras
        (asset-major): ``cameras`` themselves, or ``render_cameras`` when ``cameras`` is a
        precomputed embedding. The returned ``x0`` / ``x0_images`` are the winner's."""
        if step < self.start_step:
            return super().forward(renders, prompts, cameras, step, generator)
        b = len(prompts)
        v = self.prior.num_views
        if render_cameras is None and isinstance(cameras, Cameras):
            render_cameras = cameras
        if render_cameras is None or len(render_cameras) != b * v:
            raise ValueError(
                f"RankedDistillation needs the {b * v} renders' cameras, got "
                f"{None if render_cameras is None else len(render_cameras)}"
            )
        z, t, text, uncond = self._prepare(renders, prompts, step, generator)
        # the same timestep, two noise draws (DreamDPO's pair)
        noises = [torch.randn(z.shape, generator=generator).to(z) for _ in range(2)]
        condition = prior_camera_condition(cameras).to(z)
        draws = [self.predict_target(z, noise, t, text, uncond, condition) for noise in noises]
        with torch.no_grad():
            decoded = [self.prior.decode(x0) for _, x0 in draws]  # 2 x (B*V, 3, h, w)
            images = torch.cat(decoded)
            if images.shape[-2:] != renders.shape[-2:]:
                images = F.interpolate(
                    images, renders.shape[-2:], mode="bilinear", align_corners=False, antialias=True
                )
            assets = images.clamp(0, 1).reshape(2 * b, v, *images.shape[1:])  # as the judge takes
            both_cameras = Cameras.cat([render_cameras, render_cameras])
            scores = self.judge.score(assets, prompts * 2, cameras=both_cameras)
            score_a, score_b = scores[:b].float(), scores[b:].float()
        a_wins = (score_a >= score_b).to(z.device)  # (B,)
        push = ((score_a - score_b).abs() > self.score_margin).to(z.device)
        per_image = a_wins.repeat_interleave(v).view(-1, 1, 1, 1)
        (target_a, x0_a), (target_b, x0_b) = draws
        win_target = torch.where(per_image, target_a, target_b)
        lose_target = torch.where(per_image, target_b, target_a)
        x0_win = torch.where(per_image, x0_a, x0_b)
        images_win = torch.where(per_image.to(decoded[0].device), *decoded)
        # grad w.r.t. z: (z - win) - push * (z - lose) = z - [win + push * (z - lose)]
        pushed = push.repeat_interleave(v).view(-1, 1, 1, 1).to(z)
        target = win_target + pushed * (z.detach() - lose_target)
        logs = {
            "rank_win_score": float(torch.maximum(score_a, score_b).mean()),
            "rank_gap": float((score_a - score_b).abs().mean()),
            "rank_pushed": float(push.float().mean()),
        }
        return self._output(z, target, t, x0_win, logs, images_win)
