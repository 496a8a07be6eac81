"""A privileged, differentiable judge for primitives prompts: DreamFL's positive control.

``GroundTruthJudge`` scores renders by how close they are to the prompt's ground-truth scene
seen from the *same* cameras (the world's own renderer, blurred so that a small shift or a
slightly different silhouette costs little, as in the oracle). It is not a reward model: it reads
the answer, which no reward model can. It exists to answer one question about DreamFL in the
primitives world: when the judge is right, does the reward term (its weight, its schedule, the
straight-through x_hat) move the asset towards the truth? If it does while the learned Reward3D
does not, the learned judge is what limits DreamFL, not the method around it.

Use it in place of Reward3D in a DreamFL config
(``configs/dreamfl/presets/ground_truth_judge.yaml``); keep the shipped Reward3D as the
``eval_reward`` so the results are scored like every other run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dreamreward.render.cameras import Cameras
from dreamreward.render.image_ops import gaussian_blur
from dreamreward.world.prompts import parse_prompt
from dreamreward.world.scene import Scene
from dreamreward.world.views import ground_truth_views


class GroundTruthJudge(nn.Module):
    """Reward = ``-scale * mean |blur(render) - blur(ground truth)|`` over pixels and views.

    Args:
        blur_sigma: the Gaussian blur's standard deviation, in pixels of a 64 px view (scaled
            with the render size): tolerance to small misalignments.
        scale: multiplies the reward (a readable range; the balanced ``grad_fraction``
            weighting does not depend on it).
    """

    def __init__(self, blur_sigma: float = 1.5, scale: float = 10.0) -> None:
        super().__init__()
        if blur_sigma < 0 or scale <= 0:
            raise ValueError(
                f"GroundTruthJudge needs blur_sigma >= 0 and scale > 0, got {blur_sigma}, {scale}"
            )
        self.blur_sigma = blur_sigma
        self.scale = scale
        self._scenes: dict[str, Scene] = {}

    def as_frozen_guide(self) -> GroundTruthJudge:
        """Nothing to freeze (no weights); here so it stands where a Reward3D stands."""
        return self.eval()

    def reads_ground_truth(self) -> bool:
        """True: it reads the answer, so it may guide a run but never score one."""
        return True

    def check_prompt(self, prompt: str) -> None:
        """Raise ``ValueError`` unless ``prompt`` is a primitives-world prompt."""
        self.scene(prompt)

    def scene(self, prompt: str) -> Scene:
        """The prompt's ground-truth scene (cached).

        Raises:
            ValueError: the prompt is not a primitives-world prompt (no ground truth).
        """
        if prompt not in self._scenes:
            try:
                self._scenes[prompt] = parse_prompt(prompt)
            except ValueError as error:
                raise ValueError(
                    f"GroundTruthJudge only judges primitives-world prompts; {prompt!r} is not "
                    f"one ({error})"
                ) from error
        return self._scenes[prompt]

    def score(
        self,
        renders: Tensor,
        prompts: Sequence[str],
        *,
        cameras: Cameras,
    ) -> Tensor:
        """Score B assets of V views each (the :class:`~dreamreward.guidance.judge.Judge` call).

        Args:
            renders: (B, V, 3, H, W) in [0, 1], differentiable.
            prompts: B primitives prompts.
            cameras: the B*V cameras the renders were made from, asset-major.

        Returns:
            (B,) rewards (0 is a perfect match; lower is worse), differentiable w.r.t.
            ``renders``.
        """
        if renders.ndim != 5 or renders.shape[2] != 3:
            raise ValueError(f"expected renders (B, V, 3, H, W), got {tuple(renders.shape)}")
        b, v, _, h, w = renders.shape
        if len(prompts) != b or len(cameras) != b * v:
            raise ValueError(
                f"{b} assets of {v} views need {b} prompts and {b * v} cameras, got "
                f"{len(prompts)} and {len(cameras)}"
            )
        cameras = cameras.with_resolution(w, h).to(torch.device("cpu"))
        with torch.no_grad():
            truth = torch.stack(
                [
                    ground_truth_views(self.scene(p), cameras[i * v : (i + 1) * v])
                    for i, p in enumerate(prompts)
                ]
            )  # (B, V, H, W, 3)
        truth = truth.permute(0, 1, 4, 2, 3).to(renders)
        sigma = self.blur_sigma * h / 64
        blurred = gaussian_blur(renders.flatten(0, 1), sigma)
        diff = (blurred - gaussian_blur(truth.flatten(0, 1), sigma)).abs()
        return -self.scale * diff.reshape(b, -1).mean(dim=1)
