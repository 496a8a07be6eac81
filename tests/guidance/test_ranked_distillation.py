"""The reward as a ranker (DreamDPO): two noise draws at one timestep, ranked by a judge."""

from __future__ import annotations

import json

import pytest
import torch

from _guidance_toys import CameraJudge, Redness, gen, renders
from _tiny_prior import tiny_prior
from dreamreward.guidance import RankedDistillation, ScoreDistillation
from dreamreward.render.cameras import Cameras
from dreamreward.world.views import default_cameras

CAMS = Cameras.cat([default_cameras(8)] * 2)  # two objects' rings of 4 views
PROMPTS = ["ab", "cd"]


def draws(prior, ranker: RankedDistillation, g: torch.Tensor, cams: torch.Tensor, seed: int):
    """Both draws' (target, x0), recomputed from the same generator stream."""
    draw = gen(seed)
    t = ranker.timesteps.sample(10_000, 2, 1000, draw)
    z = g.detach().flatten(0, 1) * 2 - 1  # the prior's (B*V, 3, h, w) batch
    text, uncond = prior.encode_prompts(PROMPTS), prior.encode_prompts(["", ""])
    noises = [torch.randn(z.shape, generator=draw) for _ in range(2)]
    return z, [ranker.predict_target(z, n, t, text, uncond, cams) for n in noises]


@pytest.mark.parametrize("loss", ["sds", "x0"])
def test_gradient_pulls_to_the_winner_and_pushes_from_the_loser(loss) -> None:
    prior = tiny_prior()
    judge = Redness()
    ranker = RankedDistillation(judge, score_margin=0.0, prior=prior, loss=loss, guidance_scale=5.0)
    assert judge.frozen and not any(p.requires_grad for p in prior.parameters())
    g = renders()
    cams = torch.randn(8, 16)
    out = ranker(g, PROMPTS, cams, 10_000, gen(3), render_cameras=CAMS)
    out.loss.backward()
    z, ((target_a, x0_a), (target_b, x0_b)) = draws(prior, ranker, g, cams, 3)
    # the judge saw both one-step predictions as images: A's two objects, then B's
    seen = judge.seen
    assert seen.shape == (4, 4, 3, 8, 8)
    score = 10 * (seen[:, :, 0] - seen[:, :, 2]).mean(dim=(1, 2, 3))
    a_wins = (score[:2] >= score[2:]).repeat_interleave(4).view(-1, 1, 1, 1)
    residual_a, residual_b = z - target_a, z - target_b
    expected = torch.where(a_wins, residual_a - residual_b, residual_b - residual_a)
    torch.testing.assert_close(g.grad.flatten(0, 1), expected / 8 * 2, atol=1e-5, rtol=1e-4)
    assert out.x0.shape == out.x0_images.shape == g.shape  # the renders' layout
    x0 = out.x0.flatten(0, 1)
    torch.testing.assert_close(x0, torch.where(a_wins, x0_a, x0_b))
    decoded = prior.decode(x0).view_as(out.x0_images)
    torch.testing.assert_close(out.x0_images, decoded)  # the winner's, decoded
    assert out.logs["rank_pushed"] == 1.0 and out.logs["rank_gap"] > 0


def test_close_scores_fall_back_to_distillation_from_the_winner() -> None:
    prior = tiny_prior()
    ranker = RankedDistillation(Redness(), score_margin=1e9, prior=prior, loss="sds")
    g = renders()
    cams = torch.randn(8, 16)
    out = ranker(g, PROMPTS, cams, 10_000, gen(5), render_cameras=CAMS)
    out.loss.backward()
    z, ((target_a, _), (target_b, _)) = draws(prior, ranker, g, cams, 5)
    first, second = (z - target_a) / 8 * 2, (z - target_b) / 8 * 2
    grad = g.grad.flatten(0, 1)
    for obj in range(2):
        rows = slice(4 * obj, 4 * obj + 4)
        winner_is_a = torch.allclose(grad[rows], first[rows], atol=1e-5)
        assert winner_is_a or torch.allclose(grad[rows], second[rows], atol=1e-5)
    assert out.logs["rank_pushed"] == 0.0


def test_before_start_step_it_is_the_baseline_step() -> None:
    prior = tiny_prior()
    ranker = RankedDistillation(Redness(), start_step=100, prior=prior, loss="sds")
    plain = ScoreDistillation(prior, loss="sds")
    cams = torch.randn(8, 16)
    a, b = renders(), renders()
    ranker(a, PROMPTS, cams, 50, gen(2), render_cameras=CAMS).loss.backward()
    plain(b, PROMPTS, cams, 50, gen(2)).loss.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_a_camera_judge_gets_both_draws_cameras_and_cameras_are_required() -> None:
    judge = CameraJudge()
    ranker = RankedDistillation(judge, prior=tiny_prior())
    ranker(renders(), PROMPTS, torch.randn(8, 16), 0, gen(), CAMS)
    assert judge.camera_counts == [16]  # 2 draws x 2 objects x 4 views
    ranker(renders(), PROMPTS, CAMS, 0, gen())  # given Cameras, the judge reads those
    assert judge.camera_counts == [16, 16]
    with pytest.raises(ValueError, match="cameras"):
        ranker(renders(), PROMPTS, torch.randn(8, 16), 0, gen())
    with pytest.raises(ValueError, match="score_margin"):
        RankedDistillation(Redness(), score_margin=float("nan"), prior=tiny_prior())
    with pytest.raises(ValueError, match="start_step must be >= 0"):
        RankedDistillation(Redness(), start_step=-1, prior=tiny_prior())


def test_a_ranker_run_is_its_own_method_and_scored_by_its_judge(tmp_path) -> None:
    from _dreamfl_tiny import fit, tiny_dreamfl

    module = tiny_dreamfl(reward=False)
    module.guidance = RankedDistillation(
        Redness(),
        prior=module.guidance.prior,
        guidance_scale=5.0,
        timesteps=module.guidance.timesteps,
    )
    module.eval_reward_model = module.guidance.judge
    trainer = fit(module, tmp_path, 2)
    assert "train/rank_gap" in trainer.callback_metrics
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["method"] == "ranker" and "reward" in result
    assert module._reward_setup() == {"ranker": "Redness"}


def test_ranker_configs_resolve(capsys) -> None:
    from pathlib import Path

    import yaml

    from dreamreward.cli import main

    root = Path(__file__).resolve().parents[2] / "configs" / "dreamfl"
    overlays = ["presets/ranker.yaml", "presets/ranker_ground_truth_judge.yaml"]
    for n in (1, 2):
        extra = [a for o in overlays[:n] for a in ("--config", str(root / o))]
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(root / "primitives.yaml"), *extra, "--print_config"])
        assert exit_info.value.code == 0
        model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
        guidance = model["guidance"]
        assert model["reward"] is None
        assert guidance["class_path"].endswith("RankedDistillation")
        # the distillation settings of the config below are kept
        assert guidance["init_args"]["guidance_scale"] == 3.0
        assert guidance["init_args"]["timesteps"]["init_args"]["anneal_steps"] == 600
        judge = guidance["init_args"]["judge"]["class_path"]
        assert judge.endswith("GroundTruthJudge" if n == 2 else "ShippedReward3D")
