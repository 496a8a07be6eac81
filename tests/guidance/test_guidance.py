"""Score distillation and the DreamFL reward term on tiny priors and a known toy reward."""

from __future__ import annotations

import pytest
import torch

from _guidance_toys import CameraJudge, Redness, gen, renders
from _tiny_prior import tiny_prior
from dreamreward.guidance import RewardGuidance, ScoreDistillation, TimestepSchedule


# ------------------------------------------------------------------ timesteps
def test_timestep_range_anneals_linearly() -> None:
    sched = TimestepSchedule((0.98, 0.98), (0.02, 0.5), anneal_steps=100)
    assert sched.bounds(0) == pytest.approx((0.98, 0.98))
    assert sched.bounds(50) == pytest.approx((0.5, 0.74))
    assert sched.bounds(1000) == pytest.approx((0.02, 0.5))
    t = sched.sample(100, 1000, 1000, gen())
    assert t.shape == (1000,) and int(t.min()) >= 20 and int(t.max()) <= 500
    assert torch.equal(t, sched.sample(100, 1000, 1000, gen()))  # seeded
    with pytest.raises(ValueError, match="start_range"):
        TimestepSchedule((0.5, 0.2))


# ------------------------------------------------------------------ distillation
def test_sds_gradient_is_weighted_noise_residual() -> None:
    prior = tiny_prior()
    sds = ScoreDistillation(prior, loss="sds", guidance_scale=7.5)
    g = renders()
    cams = torch.randn(8, 16)
    out = sds(g, ["ab", "cd"], cams, step=10_000, generator=gen(3))
    out.loss.backward()
    # recompute the expected gradient from the same draws
    draw = gen(3)
    t = sds.timesteps.sample(10_000, 2, 1000, draw)
    noise = torch.randn(8, 3, 8, 8, generator=draw)
    z = g.detach().flatten(0, 1) * 2 - 1  # the prior's (B*V, 3, h, w) batch
    t_img = t.repeat_interleave(4)
    noisy = prior.add_noise(z, noise, t_img)
    with torch.no_grad():
        eps, _ = prior.predict_noise(
            noisy,
            t,
            prior.encode_prompts(["ab", "cd"]),
            cams,
            prior.encode_prompts(["", ""]),
            7.5,
        )
    a = prior.alphas_cumprod[t_img].view(-1, 1, 1, 1)
    expected = (1 - a) * (eps - noise) / 8 * 2  # d loss / d z / N, times dz/dg = 2
    torch.testing.assert_close(g.grad.flatten(0, 1), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(out.timesteps, t)


def test_x0_loss_targets_the_rescaled_one_step_prediction() -> None:
    prior = tiny_prior()
    g = renders()
    cams = torch.randn(8, 16)
    plain = ScoreDistillation(prior, loss="x0", guidance_scale=5.0, std_rescale=0.0)
    out = plain(g, ["ab", "cd"], cams, 10_000, gen(1))
    out.loss.backward()
    z = g.detach() * 2 - 1
    torch.testing.assert_close(g.grad, (z - out.x0) / 8 * 2, atol=1e-5, rtol=1e-4)
    assert out.x0.abs().max() <= 1  # pixel-space estimates are clamped to the image range
    assert out.x0.shape == out.x0_images.shape == (2, 4, 3, 8, 8)  # the renders' layout
    rescaled = ScoreDistillation(prior, loss="x0", guidance_scale=5.0, std_rescale=0.5)
    other = rescaled(renders(), ["ab", "cd"], cams, 10_000, gen(1))
    assert not torch.allclose(other.x0, out.x0)  # the rescale changes the target
    assert not any(p.requires_grad for p in prior.parameters())


def test_the_prior_derives_its_camera_condition_from_cameras() -> None:
    """Given Cameras, distillation computes MVDream's embedding itself: the same loss and
    target as when handed that embedding."""
    from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
    from dreamreward.render.cameras import Cameras
    from dreamreward.world.views import default_cameras

    cameras = Cameras.cat([default_cameras(8)] * 2)
    sds = ScoreDistillation(tiny_prior(), loss="sds", guidance_scale=5.0)
    from_cameras = sds(renders(), ["ab", "cd"], cameras, 10_000, gen(2))
    from_embedding = sds(renders(), ["ab", "cd"], mvdream_camera_embedding(cameras), 10_000, gen(2))
    assert torch.equal(from_cameras.loss, from_embedding.loss)
    assert torch.equal(from_cameras.x0, from_embedding.x0)
    other = sds(renders(), ["ab", "cd"], torch.zeros(8, 16), 10_000, gen(2))
    assert not torch.equal(other.x0, from_cameras.x0)  # the condition is read


def test_distillation_rejects_mismatched_prompts() -> None:
    sds = ScoreDistillation(tiny_prior())
    with pytest.raises(ValueError, match="2 objects' renders for 1 prompts"):
        sds(renders(), ["only one"], torch.randn(8, 16), 0, gen())
    with pytest.raises(ValueError, match=r"the prior needs 4 views per prompt"):
        sds(renders()[:, :3], ["ab", "cd"], torch.randn(6, 16), 0, gen())
    with pytest.raises(ValueError, match=r"must be \(B, V, 3, H, W\).*renders.view"):
        sds(renders().flatten(0, 1), ["ab", "cd"], torch.randn(8, 16), 0, gen())
    with pytest.raises(ValueError, match="loss must be"):
        ScoreDistillation(tiny_prior(), loss="vsd")


# ------------------------------------------------------------------ reward term
def _cameras():
    from dreamreward.render.cameras import orbit_cameras

    return orbit_cameras(15.0, torch.tensor([0.0, 90.0, 180.0, 270.0] * 2), 2.5, 40.0, 8)


CAMS = _cameras()  # two objects' rings of 4 views


def test_reward_is_frozen_and_waits_for_start_step() -> None:
    reward = Redness()
    term = RewardGuidance(reward, weight=0.5, start_step=100)
    assert reward.frozen
    g = renders()
    out = term(g, g.detach(), torch.tensor([999, 999]), ["a", "b"], CAMS, 99, torch.tensor(1.0))
    assert not out.active and float(out.loss.detach()) == 0.0 and out.distill_scale == 1.0


def test_every_k_steps_with_k_times_the_weight() -> None:
    g = renders()
    args = (g.detach(), torch.tensor([999, 999]), ["a", "b"], CAMS)
    every_step = RewardGuidance(Redness(), weight=0.5, objective="linear", start_step=10)
    every_third = RewardGuidance(Redness(), weight=0.5, objective="linear", start_step=10, every=3)
    assert [every_third.active_at(s) for s in (9, 10, 11, 12, 13)] == [0, 1, 0, 0, 1]
    off = every_third(g, *args, 11, torch.tensor(1.0))
    assert not off.active and float(off.loss.detach()) == 0.0
    on, reference = every_third(g, *args, 13, torch.tensor(1.0)), every_step(g, *args, 13, 1.0)
    assert on.active and on.weight == pytest.approx(3 * reference.weight)
    (grad_on,) = torch.autograd.grad(on.loss, g)
    (grad_ref,) = torch.autograd.grad(reference.loss, g)
    torch.testing.assert_close(grad_on, 3 * grad_ref)
    # the balanced weighting keeps k times the fraction
    balanced = RewardGuidance(Redness(), weighting="grad_fraction", grad_fraction=0.2, every=2)
    distill = (g**2).sum()
    out = balanced(g, *args, 0, distill)
    (grad,) = torch.autograd.grad(out.loss, g)
    (grad_distill,) = torch.autograd.grad(distill, g)
    assert float(grad.norm()) == pytest.approx(2 * 0.2 * float(grad_distill.norm()), rel=1e-5)
    # an off step of the reward-only tail keeps the tail's rule: no distillation
    tail = RewardGuidance(Redness(), start_step=0, every=2, reward_only_after=100)
    assert tail(g, *args, 101, torch.tensor(1.0)).distill_scale == 0.0
    # a term that never started (weight 0, or a tail before the start) leaves distillation on
    silent = RewardGuidance(Redness(), weight=0.0, reward_only_after=100)
    assert silent(g, *args, 150, torch.tensor(1.0)).distill_scale == 1.0
    late = RewardGuidance(Redness(), start_step=200, reward_only_after=100)
    assert late(g, *args, 150, torch.tensor(1.0)).distill_scale == 1.0
    with pytest.raises(ValueError, match="every"):
        RewardGuidance(Redness(), every=0)


def test_straight_through_scores_x0_but_moves_the_render() -> None:
    reward = Redness()
    term = RewardGuidance(reward, weight=1.0, objective="linear", straight_through_max_t=300)
    g = renders()
    x0 = torch.zeros(2, 4, 3, 8, 8)
    x0[:, :, 0] = 1.0  # a pure red prediction
    out = term(g, x0, torch.tensor([100, 900]), ["a", "b"], CAMS, 0, torch.tensor(1.0))
    # object 0 (t=100 <= 300) is scored on x_hat, object 1 on its render
    assert torch.equal(reward.seen[0], x0[0])
    torch.testing.assert_close(reward.seen[1], g.detach()[1])
    assert out.scores[0] == pytest.approx(10.0)
    out.loss.backward()
    # -mean(r): d/dg of 10 (red - blue) averaged over 2 objects x 4 views x 64 pixels
    expected = torch.zeros(2, 4, 3, 8, 8)
    expected[:, :, 0], expected[:, :, 2] = -10 / (2 * 4 * 64), 10 / (2 * 4 * 64)
    torch.testing.assert_close(g.grad, expected)


def test_hinge_stops_pulling_past_the_margin() -> None:
    term = RewardGuidance(Redness(), weight=1.0, objective="hinge", hinge_margin=4.0)
    red = torch.zeros(1, 4, 3, 8, 8)
    red[:, :, 0] = 1.0
    g = red.clone().requires_grad_(True)  # reward 10 > margin 4
    out = term(g, red, torch.tensor([999]), ["a"], CAMS[:4], 0, torch.tensor(1.0))
    assert float(out.loss.detach()) == 0.0


def test_digit_weighting_and_reward_only_tail() -> None:
    term = RewardGuidance(
        Redness(), weight=0.3, objective="hinge", weighting="digits", reward_only_after=50
    )
    g = torch.full((1, 4, 3, 8, 8), 0.5, requires_grad=True)  # reward 0 -> hinge 4 (1 digit)
    out = term(g, g.detach(), torch.tensor([999]), ["a"], CAMS[:4], 10, torch.tensor(1234.0))
    assert out.weight == pytest.approx(0.3 * 10**3) and out.distill_scale == 1.0
    tail = term(g, g.detach(), torch.tensor([999]), ["a"], CAMS[:4], 50, torch.tensor(5.0))
    assert tail.distill_scale == 0.0


def test_grad_fraction_weighting_balances_gradient_norms() -> None:
    term = RewardGuidance(
        Redness(), weight=1.0, objective="linear", weighting="grad_fraction", grad_fraction=0.25
    )
    g = renders()
    distill = (g - 0.3).pow(2).sum() * 7.0
    out = term(g, g.detach(), torch.tensor([999, 999]), ["a", "b"], CAMS, 0, distill)
    g_reward = torch.autograd.grad(out.loss, g, retain_graph=True)[0]
    g_distill = torch.autograd.grad(distill, g)[0]
    assert float(g_reward.norm() / g_distill.norm()) == pytest.approx(0.25, rel=1e-4)


def test_augmented_copies_are_scored_in_one_batch_and_averaged() -> None:
    """``augmentation``: k augmented copies of the B assets go to the judge in one (k*B) call,
    the reward is their mean, the draws repeat for the same step, and the gradient still lands
    on the renders; camera judges get the cameras once per copy."""
    from dreamreward.models.reward3d import ViewAugmentation

    g = renders()
    args = (g.detach(), torch.tensor([999, 999]), ["a", "b"], CAMS)
    augment = ViewAugmentation(max_zoom=1.3, max_shift=0.1, soften_probability=1.0)
    judge = Redness()
    term = RewardGuidance(
        judge, weight=1.0, objective="linear", augmentation=augment, augmented_copies=3
    )
    out = term(g, *args, 5, torch.tensor(1.0))
    assert judge.seen is not None and judge.seen.shape == (6, 4, 3, 8, 8)
    expected = 10 * (judge.seen[:, :, 0] - judge.seen[:, :, 2]).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.scores, expected.view(3, 2).mean(0))
    assert not torch.allclose(judge.seen[:2], judge.seen[2:4])  # copies differ
    first = judge.seen.clone()
    term(g, *args, 5, torch.tensor(1.0))
    assert torch.equal(judge.seen, first)  # seeded by the step
    term(g, *args, 6, torch.tensor(1.0))
    assert not torch.equal(judge.seen, first)
    (grad,) = torch.autograd.grad(out.loss, g)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    plain = RewardGuidance(Redness(), weight=1.0, objective="linear")
    unmoved = RewardGuidance(
        Redness(),
        weight=1.0,
        objective="linear",
        augmentation=ViewAugmentation(max_zoom=1.0, max_shift=0.0, soften_probability=0.0),
        augmented_copies=2,
    )
    torch.testing.assert_close(
        unmoved(g, *args, 5, torch.tensor(1.0)).scores, plain(g, *args, 5, torch.tensor(1.0)).scores
    )
    camera_judge = CameraJudge()
    RewardGuidance(camera_judge, augmentation=augment, augmented_copies=2)(
        g, *args, 0, torch.tensor(1.0)
    )
    assert camera_judge.camera_counts == [16]
    with pytest.raises(ValueError, match="augmented_copies"):
        RewardGuidance(Redness(), augmentation=augment, augmented_copies=0)
