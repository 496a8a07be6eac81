"""GroundTruthJudge: the privileged judge of DreamFL's positive control."""

from __future__ import annotations

import pytest
import torch

from dreamreward.guidance import RewardGuidance
from dreamreward.world.prompts import parse_prompt
from dreamreward.world.reference_judge import GroundTruthJudge
from dreamreward.world.views import default_cameras, ground_truth_views

PROMPT = "a red cube on top of a blue sphere"


def truth(prompt: str = PROMPT, size: int = 32):
    cams = default_cameras(size)
    views = ground_truth_views(parse_prompt(prompt), cams)  # (4, H, W, 3)
    return views.permute(0, 3, 1, 2)[None], cams  # (1, 4, 3, H, W)


def test_the_truth_scores_best_and_wrong_content_lower() -> None:
    judge = GroundTruthJudge().as_frozen_guide()
    views, cams = truth()
    right = judge.score(views, [PROMPT], cameras=cams)
    swapped, _ = truth("a blue cube on top of a red sphere")
    wrong = judge.score(swapped, [PROMPT], cameras=cams)
    blank = judge.score(torch.ones_like(views), [PROMPT], cameras=cams)
    assert float(right) == pytest.approx(0.0, abs=1e-6)
    assert float(blank) < float(wrong) < float(right)


def test_its_gradient_moves_a_render_towards_the_truth() -> None:
    judge = GroundTruthJudge()
    views, cams = truth()
    render = torch.full_like(views, 0.5).requires_grad_()
    reward = judge.score(render, [PROMPT], cameras=cams)
    (grad,) = torch.autograd.grad(reward.sum(), render)
    stepped = (render + 0.05 * grad.sign()).detach()
    assert float(judge.score(stepped, [PROMPT], cameras=cams)) > float(reward)


def test_bad_input_is_named() -> None:
    judge = GroundTruthJudge()
    views, cams = truth()
    with pytest.raises(ValueError, match="only judges primitives-world prompts"):
        judge.score(views, ["a teapot on a table"], cameras=cams)
    with pytest.raises(ValueError, match="need 1 prompts and 4 cameras"):
        judge.score(views, [PROMPT], cameras=cams[:2])
    with pytest.raises(ValueError, match="blur_sigma"):
        GroundTruthJudge(blur_sigma=-1.0)


def test_reward_guidance_passes_the_cameras() -> None:
    views, cams = truth()
    renders = views.clone().requires_grad_()  # (1, 4, 3, H, W)
    term = RewardGuidance(GroundTruthJudge(), weight=1.0, objective="linear")
    args = (renders, renders.detach(), torch.tensor([999]), [PROMPT])
    out = term(*args, cams, 0, torch.tensor(1.0))
    assert out.active and float(out.scores[0]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="need 4 cameras"):
        term(*args, cams[:2], 0, torch.tensor(1.0))
