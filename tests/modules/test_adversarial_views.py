"""PGD views against a loss: they raise it, stay in the ball, and repeat for a seed."""

from __future__ import annotations

import torch

from dreamreward.modules.adversarial_views import adversarial_views


def _loss(weights: torch.Tensor):
    return lambda views: (views * weights).sum()


def test_views_raise_the_loss_inside_each_views_ball() -> None:
    gen = torch.Generator().manual_seed(0)
    views = torch.rand(3, 4, 3, 8, 8, generator=gen) * 0.5 + 0.25  # away from the clamp
    weights = torch.randn(views.shape, generator=gen)
    loss = _loss(weights)
    out = adversarial_views(loss, views, 0.02, 3, torch.Generator().manual_seed(1))
    assert out.shape == views.shape and not out.requires_grad
    radius = 0.02 * (3 * 8 * 8) ** 0.5
    assert float((out - views).flatten(2).norm(dim=2).max()) <= radius * (1 + 1e-5)
    assert float(loss(out)) > float(loss(views))
    # the best a view can do is the full radius along its weights; PGD gets close to it
    best = (weights.flatten(2).norm(dim=2) * radius).sum()
    assert float(loss(out) - loss(views)) > 0.9 * float(best)
    again = adversarial_views(loss, views, 0.02, 3, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_no_ball_no_change() -> None:
    views = torch.rand(1, 4, 3, 8, 8, requires_grad=True)
    out = adversarial_views(_loss(torch.ones_like(views)), views, 0.0, 2)
    assert torch.equal(out, views.detach()) and not out.requires_grad
