"""ViewAugmentation: shape, range, identity settings, seeded draws, gradients, what it moves,
the smoothing noise."""

from __future__ import annotations

import pytest
import torch

from dreamreward.models.reward3d import ViewAugmentation


def _views(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_identity_settings_return_the_views() -> None:
    views = _views()
    still = ViewAugmentation(max_zoom=1.0, max_shift=0.0, soften_probability=0.0)
    assert torch.allclose(still(views), views, atol=1e-6)


def test_shape_range_and_seeded_draws() -> None:
    views = _views()
    augment = ViewAugmentation(max_zoom=1.3, max_shift=0.1, soften_probability=1.0)
    a = augment(views, torch.Generator().manual_seed(1))
    b = augment(views, torch.Generator().manual_seed(1))
    c = augment(views, torch.Generator().manual_seed(2))
    assert a.shape == views.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    # each view on its own: the 8 views of one call are not all moved alike
    moved = (a - views).abs().flatten(2).mean(-1).flatten()
    assert moved.std() > 0


def test_a_shift_moves_the_content_and_softening_removes_detail() -> None:
    dot = torch.zeros(1, 3, 32, 32)
    dot[..., 14:18, 14:18] = 1.0
    shifted = ViewAugmentation(max_zoom=1.0, max_shift=0.2, soften_probability=0.0)(
        dot, torch.Generator().manual_seed(0)
    )
    ys, xs = torch.nonzero(shifted[0, 0] > 0.5, as_tuple=True)
    assert (ys.float().mean() - 15.5).abs() + (xs.float().mean() - 15.5).abs() > 1.0
    assert float(shifted.sum()) == pytest.approx(float(dot.sum()), rel=0.1)  # moved, not lost
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    checker = checker.float().expand(1, 3, 32, 32)
    soft = ViewAugmentation(
        max_zoom=1.0, max_shift=0.0, min_resolution=0.5, soften_probability=1.0
    )(checker, torch.Generator().manual_seed(0))
    assert float(soft.std()) < 0.5 * float(checker.std())


def test_a_fixed_blur_is_the_same_gaussian_every_time_and_smooths_the_gradient() -> None:
    from dreamreward.render.image_ops import gaussian_blur

    views = _views()
    blur = ViewAugmentation(max_zoom=1.0, max_shift=0.0, soften_probability=0.0, blur_sigma=4.0)
    out = blur(views, torch.Generator().manual_seed(0))
    # sigma is given per 64 px of view side: 4 at 64 px is 1 at these 16 px views
    expected = gaussian_blur(views.flatten(0, 1), 1.0).clamp(0, 1).reshape(views.shape)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out, blur(views, torch.Generator().manual_seed(5)))  # nothing random
    # the gradient of anything read through the blur is blurred: its pixel noise is damped
    inputs = views.clone().requires_grad_(True)
    noise = torch.randn(views.shape, generator=torch.Generator().manual_seed(1))
    (blur(inputs) * noise).sum().backward()
    assert inputs.grad is not None and float(inputs.grad.std()) < 0.5 * float(noise.std())


def test_noise_is_seeded_zero_mean_of_the_given_std_and_kept_in_range() -> None:
    views = torch.full((2, 4, 3, 32, 32), 0.5)
    views[..., :4, :] = 1.0  # a white strip: there the clipped noise can only darken
    noisy = ViewAugmentation(max_zoom=1.0, max_shift=0.0, soften_probability=0.0, noise_std=0.05)
    a = noisy(views, torch.Generator().manual_seed(3))
    assert torch.equal(a, noisy(views, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, noisy(views, torch.Generator().manual_seed(4)))
    residual = (a - views)[..., 4:, :]
    assert float(residual.std()) == pytest.approx(0.05, rel=0.05)
    assert abs(float(residual.mean())) < 0.005
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0  # Reward3D refuses anything else
    assert float((a - views)[..., :4, :].max()) <= 0.0
    # the gradient passes straight through the noise (where nothing was clipped)
    inputs = views.clone().requires_grad_(True)
    noisy(inputs, torch.Generator().manual_seed(0)).sum().backward()
    assert torch.equal(inputs.grad[..., 4:, :], torch.ones_like(views[..., 4:, :]))


def test_gradients_reach_the_views() -> None:
    views = _views().requires_grad_(True)
    out = ViewAugmentation(soften_probability=1.0)(views, torch.Generator().manual_seed(0))
    out.square().sum().backward()
    assert (
        views.grad is not None and torch.isfinite(views.grad).all() and views.grad.abs().sum() > 0
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_zoom": 0.9}, "max_zoom"),
        ({"max_shift": 0.5}, "max_shift"),
        ({"min_resolution": 0.0}, "min_resolution"),
        ({"soften_probability": 1.5}, "soften_probability"),
        ({"blur_sigma": -1.0}, "blur_sigma"),
        ({"blur_sigma": float("nan")}, "blur_sigma"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"noise_std": float("inf")}, "noise_std"),
    ],
)
def test_bad_settings_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ViewAugmentation(**kwargs)
    with pytest.raises(ValueError, match="expected views"):
        ViewAugmentation()(torch.rand(2, 4, 16, 16))
