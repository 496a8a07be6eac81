"""DreamFL's reward term: Reward3D's gradient added to score distillation.

The paper shifts the distillation residual by ``delta_eps = lambda_r * d r(y, x_hat, c) / d g``,
with the reward r evaluated on the prior's one-step prediction ``x_hat`` and only the 3D
representation trained. As a loss on the renders g this is ``-lambda_r * r(x_hat)`` with a
straight-through estimator: the reward sees ``x_hat`` and its gradient lands on g
(``img = g - sg(g - x_hat)``).

The released code differs (two presets, see ``configs/dreamfl/``):

- a hinge ``relu(margin - r)`` (margin 4) instead of ``-r``;
- the reward from step ``start_step`` on (6000 "conservative", 1001 "aggressive");
- ``x_hat`` straight-through only when ``t <= straight_through_max_t`` (100 / 300), the render
  itself otherwise;
- the weight multiplied by ``10^(digits(distillation loss) - digits(reward loss))`` (the
  ``"digits"`` weighting);
- the reward alone after ``reward_only_after`` (9800).

Beside these, ``weighting="grad_fraction"`` scales the reward term so the norm of its gradient
w.r.t. the renders is a fixed fraction of the distillation gradient's: the balance no longer
depends on the loss scales (the digit heuristic jumps by 10x at powers of ten).

``every=k`` evaluates the term on every k-th step only, with k times its weight (the same
mean gradient, a k-th of the cost; with Adam the reward's share of each update is not exactly
the same, since Adam normalises by the running gradient magnitude): Reward3D's forward and
backward are a fixed cost per step, large beside a cheap step such as the primitives mesh
stage's (see ``bench/dreamfl.py``).

``augmentation`` scores ``augmented_copies`` randomly moved, zoomed and softened copies of the
views and averages: the reward then follows what is in the picture rather than single pixels,
and the averaged gradient is smoother than one copy's (a remedy the literature on reward
guidance uses against adversarial, pixel-level gradients).

Every schedule follows the trainer's ``global_step``; the reward model is frozen and in eval
mode (:meth:`~dreamreward.models.reward3d.Reward3D.as_frozen_guide`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from dreamreward.guidance.judge import Judge, check_views
from dreamreward.guidance.sources import RewardSource, ShippedReward3D
from dreamreward.models.reward3d.augmentation import ViewAugmentation
from dreamreward.render.cameras import Cameras


@dataclass
class RewardOutput:
    """One reward evaluation.

    Attributes:
        loss: a surrogate whose gradient w.r.t. the renders is that of the weighted reward
            loss (its value is not; see ``value``); 0 before ``start_step``.
        value: the weighted reward loss, detached (for logging).
        scores: (B,) the judge's detached scores of what it saw.
        weight: the weight applied this step.
        active: whether the term contributed this step.
        distill_scale: multiply the distillation loss by this (0 in the reward-only tail).
    """

    loss: Tensor
    value: Tensor
    scores: Tensor
    weight: float
    active: bool
    distill_scale: float


def frozen_judge(judge: RewardSource | Judge | None) -> Judge:
    """The judge a guidance term uses, frozen and in eval mode: a source is loaded (None: the
    shipped primitives Reward3D), a built model or judge is taken as it is."""
    if isinstance(judge, RewardSource) or judge is None:
        judge = (judge or ShippedReward3D()).load()
    if not isinstance(judge, Judge):
        raise TypeError(
            f"{type(judge).__name__} is not a judge: it needs score(renders, prompts, *, "
            "cameras), check_prompt(prompt), reads_ground_truth() and as_frozen_guide() "
            "(dreamreward.guidance.judge.Judge)"
        )
    judge.as_frozen_guide()
    return judge


def augmented_judge_scores(
    judge: Judge,
    augmentation: ViewAugmentation,
    copies: int,
    assets: Tensor,
    prompts: list[str],
    cameras: Cameras,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B,) mean score of ``copies`` augmented copies of the (B, V, 3, H, W) assets, all copies
    scored in one batch (the judge gets the cameras once per copy)."""
    shown = torch.cat([augmentation(assets, generator) for _ in range(copies)])
    scores = judge.score(shown, prompts * copies, cameras=Cameras.cat([cameras] * copies))
    return scores.view(copies, len(prompts)).mean(0)


def _digits(x: float) -> int:
    """Digits of the integer part as the released code counts them (at least 1)."""
    return len(str(int(abs(x)))) if math.isfinite(x) else 1


class RewardGuidance(nn.Module):
    """Reward3D as a guidance term (see the module docstring for the formulations).

    Args:
        judge: where the Reward3D model comes from (default: the shipped primitives model);
            an already built ``Reward3D`` works too (Python use). Made a frozen guide here.
            A :class:`~dreamreward.world.reference_judge.GroundTruthJudge` in its place is the
            primitives world's positive control (a judge that knows the answer). Any
            :class:`~dreamreward.guidance.judge.Judge` works; it gets the step's cameras.
        weight: lambda_r (the base weight).
        objective: ``"linear"`` (the paper: maximise r) or ``"hinge"`` (released:
            ``relu(margin - r)``).
        hinge_margin: the hinge's margin (released: 4).
        start_step: first optimizer step with the reward term.
        straight_through_max_t: timesteps t <= this score the one-step prediction x_hat with a
            straight-through gradient to the render; larger t score the render itself. Set it
            to the schedule length for the paper's "always x_hat".
        reward_only_after: from this step on the distillation loss is dropped (None: never).
        weighting: ``"constant"``, ``"digits"`` (released) or ``"grad_fraction"``.
        grad_fraction: for ``"grad_fraction"``: target ratio of the reward gradient's norm to
            the distillation gradient's (w.r.t. the renders).
        every: evaluate the term on steps ``start_step + i * every`` only, weighted ``every``
            times as much (1: every step, as the paper and the released code).
        augmentation: score randomly augmented copies of the views (None: the views as they
            are, as the paper). Draws are seeded by ``augmentation_seed`` and the step. A judge
            that compares pixels with the ground truth from the same cameras sees the moved
            copies against the unmoved truth: meant for Reward3D.
        augmented_copies: copies scored per step, rewards averaged (each costs one more pass
            of the judge).
        augmentation_seed: seed of the augmentation draws.
    """

    def __init__(
        self,
        judge: RewardSource | Judge | None = None,
        weight: float = 0.3,
        objective: Literal["linear", "hinge"] = "hinge",
        hinge_margin: float = 4.0,
        start_step: int = 0,
        straight_through_max_t: int = 300,
        reward_only_after: int | None = None,
        weighting: Literal["constant", "digits", "grad_fraction"] = "constant",
        grad_fraction: float = 0.5,
        every: int = 1,
        augmentation: ViewAugmentation | None = None,
        augmented_copies: int = 1,
        augmentation_seed: int = 0,
    ) -> None:
        super().__init__()
        if objective not in ("linear", "hinge"):
            raise ValueError(f"objective must be 'linear' or 'hinge', got {objective!r}")
        if weighting not in ("constant", "digits", "grad_fraction"):
            raise ValueError(
                f"weighting must be 'constant', 'digits' or 'grad_fraction', got {weighting!r}"
            )
        if weight < 0 or grad_fraction <= 0:
            raise ValueError("weight must be >= 0 and grad_fraction > 0")
        if every < 1:
            raise ValueError(
                f"every must be >= 1 (evaluate the reward every k-th step), got {every}"
            )
        if augmented_copies < 1:
            raise ValueError(f"augmented_copies must be >= 1, got {augmented_copies}")
        self.judge = frozen_judge(judge)
        self.augmentation = augmentation
        self.augmented_copies = augmented_copies
        self.augmentation_seed = augmentation_seed
        self.weight = weight
        self.objective = objective
        self.hinge_margin = hinge_margin
        self.start_step = start_step
        self.straight_through_max_t = straight_through_max_t
        self.reward_only_after = reward_only_after
        self.weighting = weighting
        self.grad_fraction = grad_fraction
        self.every = every

    def forward(
        self,
        renders: Tensor,
        x0_images: Tensor,
        timesteps: Tensor,
        prompts: list[str],
        cameras: Cameras,
        step: int,
        distill_loss: Tensor,
    ) -> RewardOutput:
        """The reward loss for B objects.

        Args:
            renders: (B, V, 3, H, W) in [0, 1], differentiable.
            x0_images: (B, V, 3, H', W') the prior's detached one-step prediction as images.
            timesteps: (B,) the distillation timesteps.
            prompts: B prompts.
            cameras: the B*V cameras of the renders, asset-major (the judge derives what it
                needs: Reward3D its view labels, the ground-truth judge the same viewpoints).
            step: the optimizer step.
            distill_loss: the distillation loss of this step (for the weightings).
        """
        b, v = check_views(renders, prompts, type(self).__name__)
        distill_scale = 0.0 if self._reward_only(step) else 1.0
        if not self.active_at(step):
            zero = renders.sum() * 0.0
            # Not started (or weight 0): plain distillation, tail or not. An off step of
            # every=k inside the reward-only tail keeps the tail's rule (no distillation; only
            # the mesh regulariser trains) rather than bringing the distillation back.
            started = step >= self.start_step and self.weight > 0
            scale = distill_scale if started else 1.0
            return RewardOutput(zero, zero.detach(), torch.zeros(b), 0.0, False, scale)
        images = renders
        use_x0 = timesteps <= self.straight_through_max_t  # (B,)
        if use_x0.any():
            x0 = x0_images.to(renders)
            if x0.shape[-2:] != renders.shape[-2:]:
                x0 = nn.functional.interpolate(
                    x0.flatten(0, 1),
                    renders.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                ).view_as(renders)
            # value of x_hat, gradient of the render (straight-through)
            straight = renders - (renders - x0).detach()
            images = torch.where(use_x0.view(-1, 1, 1, 1, 1), straight, renders)
        if len(cameras) != b * v:
            raise ValueError(f"{b} objects of {v} views need {b * v} cameras, got {len(cameras)}")
        assets = images.clamp(0, 1)
        if self.augmentation is None:
            reward = self.judge.score(assets, prompts, cameras=cameras)
        else:
            generator = torch.Generator().manual_seed(self.augmentation_seed * 1_000_003 + step)
            reward = augmented_judge_scores(
                self.judge,
                self.augmentation,
                self.augmented_copies,
                assets,
                prompts,
                cameras,
                generator,
            )
        if self.objective == "hinge":
            raw = torch.relu(self.hinge_margin - reward).mean()
        else:
            raw = -reward.mean()
        # One backward through Reward3D, here, instead of one per use (the weighting needs the
        # gradient's norm, the total loss needs the gradient): the returned loss is the
        # surrogate <renders, w * d raw / d renders>, whose gradient w.r.t. the renders (and so
        # the 3D parameters) is exactly that of w * raw, and the reward's graph is freed now.
        (grad,) = torch.autograd.grad(raw, renders, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(renders)
        weight = self._weight(raw, grad, renders, distill_loss)
        surrogate = (renders * (weight * grad).detach()).sum()
        value = weight * raw.detach()
        return RewardOutput(surrogate, value, reward.detach(), weight, True, distill_scale)

    def active_at(self, step: int) -> bool:
        """Whether the term is evaluated at optimizer step ``step``."""
        if step < self.start_step or self.weight == 0:
            return False
        return (step - self.start_step) % self.every == 0

    def _reward_only(self, step: int) -> bool:
        return self.reward_only_after is not None and step >= self.reward_only_after

    def _weight(self, raw: Tensor, grad: Tensor, renders: Tensor, distill_loss: Tensor) -> float:
        if self.weighting == "constant":
            return self.weight * self.every
        if self.weighting == "digits":
            exponent = _digits(float(distill_loss)) - _digits(float(raw))
            return self.weight * self.every * 10.0**exponent
        # grad_fraction: |d(w raw)/dg| = fraction * |d distill/dg|
        (g_distill,) = torch.autograd.grad(
            distill_loss, renders, retain_graph=True, allow_unused=True
        )
        n_reward = float(grad.norm())
        if g_distill is None or n_reward < 1e-12:
            return 0.0
        return self.every * self.grad_fraction * float(g_distill.norm()) / n_reward
