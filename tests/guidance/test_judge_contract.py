"""One contract, every judge: what RewardGuidance and RankedDistillation rely on
(``dreamreward.guidance.judge.Judge``), checked on the shipped Reward3D and the ground-truth
judge alike."""

from __future__ import annotations

import pytest
import torch

from dreamreward.guidance.judge import Judge
from dreamreward.render.cameras import Cameras
from dreamreward.world.prompts import parse_prompt
from dreamreward.world.views import default_cameras, ground_truth_views

PROMPTS = ["a red cube on top of a blue sphere", "a green cone"]


def shipped_reward3d():
    from dreamreward.models.reward3d.export import load_reward3d

    return load_reward3d()


def ground_truth_judge():
    from dreamreward.world.reference_judge import GroundTruthJudge

    return GroundTruthJudge()


JUDGES = {"reward3d": shipped_reward3d, "ground_truth": ground_truth_judge}


@pytest.fixture(scope="module", params=list(JUDGES))
def judge(request):
    return JUDGES[request.param]().as_frozen_guide()


def assets_and_cameras() -> tuple[torch.Tensor, Cameras]:
    """Two primitives assets (2, 4, 3, 32, 32) and their 8 cameras, asset-major: the true scenes,
    faded a little (an exact match is the ground-truth judge's optimum, where its gradient is
    zero)."""
    cams = default_cameras(32)
    views = [ground_truth_views(parse_prompt(p), cams).permute(0, 3, 1, 2) for p in PROMPTS]
    return 0.1 + 0.8 * torch.stack(views), Cameras.cat([cams, cams])


def test_is_a_judge_and_frozen(judge) -> None:
    assert isinstance(judge, Judge) and isinstance(judge.reads_ground_truth(), bool)
    assert not judge.training and not any(p.requires_grad for p in judge.parameters())


def test_scores_b_assets_with_a_gradient_to_the_renders(judge) -> None:
    assets, cams = assets_and_cameras()
    assets.requires_grad_(True)
    scores = judge.score(assets, PROMPTS, cameras=cams)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    (grad,) = torch.autograd.grad(scores.sum(), assets)
    assert grad.shape == assets.shape and grad.abs().sum() > 0
    # an asset's score depends on its own views only (rows are independent)
    alone = judge.score(assets[1:].detach(), PROMPTS[1:], cameras=cams[4:])
    torch.testing.assert_close(alone, scores[1:].detach(), rtol=1e-4, atol=1e-4)


def test_refuses_cameras_that_do_not_match_the_views(judge) -> None:
    assets, cams = assets_and_cameras()
    with pytest.raises(ValueError, match="cameras"):
        judge.score(assets, PROMPTS, cameras=cams[:4])


def test_checks_a_prompt_before_any_work(judge) -> None:
    judge.check_prompt(PROMPTS[0])  # every judge judges a primitives prompt
    with pytest.raises(ValueError):
        judge.check_prompt("")


def test_a_reward3d_call_needs_labels_or_cameras() -> None:
    reward = shipped_reward3d()
    assets, _ = assets_and_cameras()
    with pytest.raises(ValueError, match="needs view_labels or the renders' cameras"):
        reward.score(assets, PROMPTS)


def test_a_guidance_term_refuses_what_is_not_a_judge() -> None:
    from dreamreward.guidance.reward_term import frozen_judge

    class ScoresOnly(torch.nn.Module):  # no check_prompt / reads_ground_truth / as_frozen_guide
        def score(self, renders, prompts, *, cameras):
            return renders.mean((1, 2, 3, 4))

    with pytest.raises(TypeError, match=r"ScoresOnly is not a judge: .*Judge"):
        frozen_judge(ScoresOnly())
