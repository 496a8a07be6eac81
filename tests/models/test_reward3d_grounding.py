"""The shipped Reward3D reads its prompt: a test that fails on a text-blind reward.

A reward trained on preference pairs alone can learn to judge completeness and cleanliness and
ignore the prompt (every pair shares one): the model shipped before this test scored a render
1.240011 / 1.240012 / 1.240011 under "a red cube on top of a blue sphere", "a blue cube on top of
a red sphere" and "asdf qwerty". Here ground-truth renders of world scenes are scored under
their own prompt, each kind of minimal edit and out-of-vocabulary prompts.
"""

from __future__ import annotations

import random

import pytest
import torch

from dreamreward.models.reward3d.export import load_reward3d
from dreamreward.world.prompt_edits import OUT_OF_VOCABULARY_PROMPTS, edited_prompts
from dreamreward.world.prompts import describe, sample_scene
from dreamreward.world.views import default_cameras, ground_truth_views

# The previous shipped model was text-blind (spread 2e-7, the true prompt beat 4 of 24 edits);
# the model shipped 2026-12-06 (fourth session) passes all three (spread >= 5.9, every
# out-of-vocabulary prompt below the true one, 18 of 24 edits beaten: colour is its weak kind).

LABELS = ("front", "side", "back", "side")
# Spread of one render's rewards over its prompts that a text-blind model cannot reach (the
# previous shipped model: 1e-6); the shipped model's spread is far larger (see the README).
MIN_SPREAD = 0.5


@pytest.fixture(scope="module")
def scored() -> list[dict[str, float]]:
    """Per scene: reward of its ground-truth render under each prompt kind."""
    model = load_reward3d()
    cams = default_cameras(64)
    rng = random.Random(1234)
    out = []
    with torch.no_grad():
        for num_objects in (1, 2, 1, 2, 2, 2):
            scene = sample_scene(rng, num_objects)
            views = ground_truth_views(scene, cams)[None]
            prompts = {"own": describe(scene)}
            prompts |= edited_prompts(scene, rng, paraphrase=False)
            prompts |= {f"oov {i}": p for i, p in enumerate(OUT_OF_VOCABULARY_PROMPTS)}
            texts = list(prompts.values())
            rewards = model.score(views.expand(len(texts), -1, -1, -1, -1), texts, LABELS)
            out.append(dict(zip(prompts, rewards.tolist(), strict=True)))
    return out


def test_the_prompt_moves_the_reward(scored):
    for scores in scored:
        values = list(scores.values())
        assert max(values) - min(values) > MIN_SPREAD, scores


def test_the_true_prompt_beats_out_of_vocabulary_prompts(scored):
    for scores in scored:
        oov = [v for k, v in scores.items() if k.startswith("oov")]
        assert scores["own"] > max(oov), scores


def test_the_true_prompt_beats_most_minimal_edits(scored):
    wins = [
        scores["own"] > v
        for scores in scored
        for k, v in scores.items()
        if k != "own" and not k.startswith("oov")
    ]
    assert sum(wins) / len(wins) >= 0.75, scored
