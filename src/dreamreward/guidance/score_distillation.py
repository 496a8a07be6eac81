"""Multi-view score distillation: SDS and MVDream's x0-reconstruction loss.

Given renders of B objects x V views, (B, V, 3, H, W) as the judges take them, the prior noises
them (one timestep per object), predicts the noise with classifier-free guidance, and returns a
loss whose gradient w.r.t. the renders is the distillation gradient:

- ``"x0"`` (MVDream): the one-step estimate ``x0_hat`` from the guided noise, optionally rescaled
  towards the unguided estimate's spread (``std_rescale``: ``x0 <- r * x0 * std(x0_nocfg) /
  std(x0) + (1 - r) * x0``, std per object over its views); loss ``0.5 * ||z - x0_hat||^2 / N``
  with ``x0_hat`` detached, summed over pixels, N the number of images.
- ``"sds"`` (DreamFusion): gradient ``w(t) (eps_guided - eps)`` with ``w(t) = 1 - alpha_bar_t``,
  as the loss ``0.5 * ||z - sg(z - grad)||^2 / N``.

Only the 3D representation is trained: the prior is frozen and in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from dreamreward.guidance.judge import check_views
from dreamreward.guidance.sources import PriorSource, SavedPrior
from dreamreward.guidance.timesteps import TimestepSchedule
from dreamreward.models.mvdiffusion.camera_embedding import mvdream_camera_embedding
from dreamreward.models.mvdiffusion.prior import MultiViewPrior
from dreamreward.render.cameras import Cameras


def prior_camera_condition(cameras: Cameras | Tensor) -> Tensor:
    """The multi-view prior's camera condition: (N, 16) MVDream embeddings of N ``Cameras``
    (derived here, where the prior consumes them), or a (N, 16) tensor passed through."""
    if isinstance(cameras, Cameras):
        return mvdream_camera_embedding(cameras)
    return cameras


@dataclass
class DistillationOutput:
    """One distillation evaluation.

    Attributes:
        loss: scalar, differentiable w.r.t. the renders.
        timesteps: (B,) the timestep of each object.
        x0: (B, V, C, h, w) the detached one-step estimate in model space (guided).
        x0_images: (B, V, 3, H', W') ``x0`` decoded to images in [0, 1] (detached), at the
            prior's resolution.
        grad_norm: the norm of the loss's gradient w.r.t. the model-space input, per image mean.
        logs: scalars worth logging that the loss alone does not show (the ranker's scores).
    """

    loss: Tensor
    timesteps: Tensor
    x0: Tensor
    x0_images: Tensor
    grad_norm: float
    logs: dict[str, float] = field(default_factory=dict)


class ScoreDistillation(nn.Module):
    """Score distillation from a frozen multi-view prior.

    Args:
        prior: where the multi-view prior comes from (default: the shipped primitives prior);
            an already loaded ``MultiViewPrior`` works too (Python use).
        loss: ``"x0"`` (MVDream's reconstruction loss) or ``"sds"``.
        guidance_scale: classifier-free guidance weight (MVDream: 50).
        std_rescale: r of the x0 rescale (MVDream: 0.5; 0 disables).
        negative_prompt: the unconditional prompt.
        timesteps: the annealed timestep range.
    """

    def __init__(
        self,
        prior: PriorSource | None = None,
        loss: Literal["x0", "sds"] = "x0",
        guidance_scale: float = 50.0,
        std_rescale: float = 0.5,
        negative_prompt: str = "",
        timesteps: TimestepSchedule | None = None,
    ) -> None:
        super().__init__()
        if loss not in ("x0", "sds"):
            raise ValueError(f"loss must be 'x0' or 'sds', got {loss!r}")
        if not 0.0 <= std_rescale <= 1.0:
            raise ValueError(f"std_rescale must be in [0, 1], got {std_rescale}")
        if not isinstance(prior, MultiViewPrior):
            prior = (prior or SavedPrior()).load()
        self.prior = prior
        prior.requires_grad_(False)
        prior.eval()
        self.loss_kind = loss
        self.guidance_scale = guidance_scale
        self.std_rescale = std_rescale
        self.negative_prompt = negative_prompt
        self.timesteps = timesteps or TimestepSchedule()

    def train(self, mode: bool = True) -> ScoreDistillation:
        # the prior is a frozen guide: never dropout, whatever Lightning asks
        return super().train(False)

    def forward(
        self,
        renders: Tensor,
        prompts: list[str],
        cameras: Cameras | Tensor,
        step: int,
        generator: torch.Generator,
        render_cameras: Cameras | None = None,
    ) -> DistillationOutput:
        """Distillation loss for B objects x V views.

        Args:
            renders: (B, V, 3, H, W) in [0, 1], differentiable (V: the prior's views).
            prompts: B prompts.
            cameras: the B*V cameras of the renders (asset-major); the prior derives its own
                condition from them (:func:`prior_camera_condition`). A (B*V, 16) tensor is
                taken as that condition already computed (MVDream's camera embedding).
            step: the optimizer step (anneals the timestep range).
            generator: a CPU generator for the timesteps and the noise (seed it per step for
                exact resume).
            render_cameras: the renders' cameras when ``cameras`` is an embedding (a judge of
                the prior's predictions needs them:
                :class:`~dreamreward.guidance.ranked_distillation.RankedDistillation`).
        """
        z, t, text, uncond = self._prepare(renders, prompts, step, generator)
        noise = torch.randn(z.shape, generator=generator).to(z)
        condition = prior_camera_condition(cameras).to(z)
        target, x0 = self.predict_target(z, noise, t, text, uncond, condition)
        return self._output(z, target, t, x0)

    def _prepare(
        self, renders: Tensor, prompts: list[str], step: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The renders (B, V, 3, H, W) in model space z (B*V, C, h, w): the prior's own batch
        layout, inside the distillation only; the step's timesteps t (B,) and the prompt and
        negative-prompt embeddings."""
        prior = self.prior
        _, v = check_views(renders, prompts, type(self).__name__)
        if v != prior.num_views:
            raise ValueError(
                f"{type(self).__name__}: renders of {v} views per object; the prior needs "
                f"{prior.num_views} views per prompt"
            )
        z = prior.encode_images(renders.flatten(0, 1))
        t = self.timesteps.sample(step, len(prompts), prior.num_train_timesteps, generator)
        with torch.no_grad():
            text = prior.encode_prompts(prompts)
            uncond = prior.encode_prompts([self.negative_prompt] * len(prompts))
        return z, t.to(z.device), text, uncond

    @torch.no_grad()
    def predict_target(
        self, z: Tensor, noise: Tensor, t: Tensor, text: Tensor, uncond: Tensor, cameras: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Noise z (B*V, C, h, w) with ``noise`` at t (B,), predict, and return the detached
        distillation target (z minus the target is the gradient w.r.t. z) and the guided
        one-step estimate x0_hat, both (B*V, C, h, w)."""
        prior = self.prior
        v = prior.num_views
        b = len(t)
        t_img = t.repeat_interleave(v)
        noisy = prior.add_noise(z.detach(), noise, t_img)
        eps, eps_cond = prior.predict_noise(noisy, t, text, cameras, uncond, self.guidance_scale)
        x0 = prior.predict_x0(noisy, eps, t_img)
        if self.loss_kind == "x0" and self.std_rescale > 0 and eps_cond is not None:
            x0_cond = prior.predict_x0(noisy, eps_cond, t_img)
            shape = (b, -1)
            factor = (x0_cond.reshape(shape).std(dim=1) + 1e-8) / (
                x0.reshape(shape).std(dim=1) + 1e-8
            )
            adjusted = x0 * factor.repeat_interleave(v).view(-1, 1, 1, 1)
            x0 = self.std_rescale * adjusted + (1 - self.std_rescale) * x0
        if not prior.is_latent:
            x0 = x0.clamp(-1.0, 1.0)  # pixel priors are trained on images in [-1, 1]
        if self.loss_kind == "x0":
            return x0, x0
        a = prior.alphas_cumprod[t_img.to(prior.device)].view(-1, 1, 1, 1).to(z)
        return z.detach() - (1 - a) * (eps - noise), x0

    def _output(
        self,
        z: Tensor,
        target: Tensor,
        t: Tensor,
        x0: Tensor,
        logs: dict[str, float] | None = None,
        x0_images: Tensor | None = None,
    ) -> DistillationOutput:
        """The loss ``0.5 * ||z - target||^2 / N`` (target detached) and what goes with it
        (``x0_images``: ``x0`` already decoded, to spare a latent prior's second VAE decode);
        z, target, x0 and x0_images (B*V, ...), returned (B, V, ...)."""
        rows = z.shape[0]
        residual = z - target
        loss = 0.5 * residual.pow(2).sum() / rows
        grad_norm = float(residual.detach().flatten(1).norm(dim=1).mean() / rows)
        if x0_images is None:
            with torch.no_grad():
                x0_images = self.prior.decode(x0)
        b = len(t)
        x0, x0_images = (x.reshape(b, rows // b, *x.shape[1:]) for x in (x0, x0_images))
        return DistillationOutput(loss, t, x0, x0_images, grad_norm, logs or {})
