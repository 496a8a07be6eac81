"""What a judge is to the guidance: the contract Reward3D and the ground-truth judge both meet.

A judge scores B assets of V views each under their prompts, given the cameras the views were
rendered from, and each judge derives from the cameras what it needs: Reward3D its view labels
("front view", ...), the ground-truth judge the same viewpoints of the true scene. DreamFL's
reward term (:class:`~dreamreward.guidance.RewardGuidance`) follows a judge's gradient; the
ranker (:class:`~dreamreward.guidance.RankedDistillation`) only orders two candidates by it.

Implementations: :class:`~dreamreward.models.reward3d.Reward3D` and
:class:`~dreamreward.world.reference_judge.GroundTruthJudge` (they meet it structurally; neither
imports this module). ``tests/guidance/test_judge_contract.py`` runs one contract test against each.

The judge's image layout, (B, V, 3, H, W), is the one layout of the guidance boundary: the
distillation and the reward term take the renders and return predicted images in it too
(:func:`check_views`); the renderer's (N, H, W, 3) is turned into it once, by the module that
renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from dreamreward.render.cameras import Cameras


def check_views(renders: Tensor, prompts: Sequence[str], owner: str) -> tuple[int, int]:
    """(B, V) of ``renders`` laid out (B, V, 3, H, W) for B ``prompts``.

    Raises:
        ValueError: another layout (a flat (B*V, 3, H, W) batch is ``renders.view(B, V, ...)``)
            or another number of objects than prompts, naming ``owner``.
    """
    shape = tuple(renders.shape)
    if renders.dim() != 5 or shape[2] != 3:
        raise ValueError(
            f"{owner}: renders must be (B, V, 3, H, W) (B objects of V views), got {shape}; "
            "a flat batch of B*V views is renders.view(B, V, 3, H, W)"
        )
    if shape[0] != len(prompts):
        raise ValueError(f"{owner}: {shape[0]} objects' renders for {len(prompts)} prompts")
    return shape[0], shape[1]


@runtime_checkable
class Judge(Protocol):
    """Scores assets under prompts (methods only, so that a config's ``class_path`` can name
    any class that implements it)."""

    def score(self, renders: Tensor, prompts: Sequence[str], *, cameras: Cameras) -> Tensor:
        """(B,) scores of B assets, higher is better.

        Args:
            renders: (B, V, 3, H, W) in [0, 1]; differentiable w.r.t. them.
            prompts: B prompts.
            cameras: the B*V cameras the views were rendered from, asset-major.
        """
        ...

    def check_prompt(self, prompt: str) -> None:
        """Raise ``ValueError`` naming the prompt when this judge cannot judge it (before any
        work starts, not at the reward term's first step)."""
        ...

    def reads_ground_truth(self) -> bool:
        """Whether the judge reads the answer (the primitives world's positive control): such a
        judge may guide a run but must not score one, since it is not a reward model (DreamFL
        then needs a separate ``eval_reward``)."""
        ...

    def as_frozen_guide(self) -> Any:  # the judge itself (an nn.Module)
        """The judge in eval mode with no parameter gradients (gradients still reach the
        renders), returned for chaining."""
        ...
