"""Adversarial training views: the reward is trained on views pushed against its own ranking.

A reward whose pixel gradient is noise is what DreamFL cannot follow (docs/experiments.md, the
gradient figures). Classifiers trained on adversarially perturbed inputs (Madry et al. 2018) have
gradients that point at changes a person would call meaningful ("perceptually aligned",
Santurkar et al. 2019; Kaur et al. 2019): inside a small ball around every training view the
ranking must hold, so what is left for the gradient is the content. Here the perturbation is
found by a few steps of projected gradient ascent on the preference loss (PGD with a random
start, in L2 per view), and the model is then trained on the perturbed views.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def adversarial_views(
    loss_of_views: Callable[[Tensor], Tensor],
    views: Tensor,
    epsilon: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Views within an L2 ball of each view that raise ``loss_of_views`` (detached).

    Args:
        loss_of_views: views (A, V, 3, H, W) -> the scalar loss to raise (the preference loss
            of the batch's pairs).
        views: (A, V, 3, H, W) in [0, 1].
        epsilon: the ball's radius as a root-mean-square change per pixel value (0.03 is about
            8/255 on every value); the L2 radius of a view is ``epsilon * sqrt(3 * H * W)``.
        steps: gradient-ascent steps, each of ``2.5 * radius / steps`` (Madry et al.), from a
            random start inside the ball.
        generator: draws the random start (seed it per step for exact resume).

    Returns:
        (A, V, 3, H, W) perturbed views in [0, 1], detached.
    """
    if epsilon <= 0 or steps < 1:
        return views.detach()
    base = views.detach()
    per_view = base[0, 0].numel()
    radius = epsilon * per_view**0.5
    step_size = 2.5 * radius / steps
    noise = torch.randn(base.shape, generator=generator).to(base)
    delta = _project(noise * (radius / per_view**0.5), radius)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_of_views((base + delta).clamp(0, 1))
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            norm = grad.flatten(2).norm(dim=2).clamp_min(1e-12)[..., None, None, None]
            delta = _project(delta + step_size * grad / norm, radius)
    return (base + delta.detach()).clamp(0, 1)


def _project(delta: Tensor, radius: float) -> Tensor:
    """Each view's perturbation (A, V, 3, H, W) scaled into the L2 ball of ``radius``."""
    norm = delta.flatten(2).norm(dim=2)[..., None, None, None]
    return delta * (radius / norm.clamp_min(radius))
